//! The response as the comparator sees it: no HTTP library's types.

/// A response reduced to what is compared: status code, headers as name/value byte pairs,
/// and the body bytes. Adapters build it from their framework's response; it borrows, so
/// building one copies nothing but the list of header references.
///
/// ```
/// use shadowlib::compare::ResponseParts;
///
/// let body = br#"{"id": 7}"#;
/// let response = ResponseParts::new(200, body)
///     .header(b"content-type", b"application/json")
///     .with_headers([(&b"x-request-id"[..], &b"abc"[..])]);
/// assert_eq!(response.headers.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseParts<'a> {
    /// The status code (HTTP semantics; any other protocol maps its own onto it).
    pub status: u16,
    /// Header names and values in the order received; a name may repeat.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body bytes.
    pub body: &'a [u8],
}

impl<'a> ResponseParts<'a> {
    /// A response with `status` and `body` and no headers yet.
    pub fn new(status: u16, body: &'a [u8]) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds one header.
    pub fn header(mut self, name: &'a [u8], value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds every header of `headers`.
    pub fn with_headers(mut self, headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        self.headers.extend(headers);
        self
    }
}
