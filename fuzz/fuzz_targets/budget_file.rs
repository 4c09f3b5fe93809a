#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shadowlib_fuzz::budget_file(data));
