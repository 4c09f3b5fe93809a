//! Train the learned predictor, and measure how well every predictor is calibrated.
//!
//! ```text
//! cargo run -p examples --example train_predictor                      # calibration table
//! cargo run -p examples --example train_predictor -- bootstrap --records 2000 --out history.jsonl
//! cargo run -p examples --example train_predictor -- train --history history.jsonl --out model.json
//! ```
//!
//! `bootstrap` writes a synthetic history from the simulator (every record is marked
//! `synthetic`), for a team that has no rollout history yet; `train` fits the logistic
//! regression on a JSON-lines history and saves the model that `LearnedPredictor` loads.
//! Without a command it trains on one synthetic history, scores every predictor on a
//! held-out one with known outcomes, and prints the Brier scores.

use std::error::Error;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use shadowlib::predict::{
    CapacityConfig, CapacityPredictor, Ensemble, HistoryRecord, LearnedModel, LearnedPredictor,
    read_history,
};
use shadowlib::simulate::{HistoryConfig, brier_score, synthetic_history};
use shadowlib::{
    Distribution, Evidence, Outcome, Predictor, SequentialPredictor, ThresholdPredictor, Version,
};

/// The value of `--name` in the arguments, if given.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, Box<dyn Error>> {
    match option(args, name) {
        Some(text) => Ok(text.parse().map_err(|e| format!("{name} {text}: {e}"))?),
        None => Ok(default),
    }
}

fn required<'a>(args: &'a [String], name: &str) -> Result<&'a str, Box<dyn Error>> {
    option(args, name).ok_or_else(|| format!("{name} FILE is required").into())
}

fn bootstrap(args: &[String]) -> Result<(), Box<dyn Error>> {
    let config = HistoryConfig {
        records: usize::try_from(number(args, "--records", 2_000)?)?,
        seed: number(args, "--seed", HistoryConfig::default().seed)?,
        ..HistoryConfig::default()
    };
    let out = required(args, "--out")?;
    let mut file = BufWriter::new(File::create(out)?);
    for record in synthetic_history(&config)? {
        serde_json::to_writer(&mut file, &record)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    println!("wrote {} synthetic records to {out}", config.records);
    Ok(())
}

fn train(args: &[String]) -> Result<(), Box<dyn Error>> {
    let history = read_history(BufReader::new(File::open(required(args, "--history")?)?))?;
    let model = LearnedModel::train(&history)?;
    let out = required(args, "--out")?;
    std::fs::write(out, model.to_json())?;
    println!(
        "trained on {} records ({}), model written to {out}",
        model.trained_on,
        if model.synthetic {
            "some synthetic"
        } else {
            "all real"
        }
    );
    Ok(())
}

/// A predictor's scores on a held-out history.
struct Scores {
    /// Brier score with an inconclusive prediction counted as 0.5 ("don't know").
    all: f64,
    /// Brier score of the conclusive predictions only.
    conclusive: Option<f64>,
    /// Share of inconclusive predictions.
    inconclusive: f64,
}

fn score<P: Predictor>(new_predictor: impl Fn() -> P, held_out: &[HistoryRecord]) -> Scores {
    let (mut all, mut conclusive) = (Vec::new(), Vec::new());
    for record in held_out {
        let prediction = new_predictor().predict(&record.evidence);
        if prediction.is_conclusive() {
            conclusive.push((prediction.failure_probability, record.incident));
            all.push((prediction.failure_probability, record.incident));
        } else {
            all.push((0.5, record.incident));
        }
    }
    Scores {
        all: brier_score(&all).unwrap_or(f64::NAN),
        conclusive: brier_score(&conclusive),
        inconclusive: 1.0 - conclusive.len() as f64 / held_out.len().max(1) as f64,
    }
}

/// Shadow evidence where the twin costs 1 ms of CPU per read and the candidate `factor`
/// times that.
fn cpu_evidence(factor: f64) -> Evidence {
    let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    let (mut stable, mut candidate) = (Distribution::cpu_ns(), Distribution::cpu_ns());
    let shadow = &mut evidence.shadow;
    for i in 0..2_000u64 {
        shadow.twin.record_request(Outcome::Success, 2_000);
        shadow.candidate.record_request(Outcome::Success, 2_000);
        let cost = 900_000 + (i % 21) * 10_000; // 1 ms ± 10%
        stable.record(cost);
        candidate.record((cost as f64 * factor) as u64);
    }
    shadow.twin.cpu_ns = Some(stable);
    shadow.candidate.cpu_ns = Some(candidate);
    evidence
}

fn calibrate() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let config = HistoryConfig::default();
    let training = synthetic_history(&config)?;
    let held_out = synthetic_history(&HistoryConfig {
        seed: config.seed ^ 0xFFFF_FFFF,
        ..config.clone()
    })?;
    let model = LearnedModel::train(&training)?;
    let capacity = config.capacity.clone();
    let incidents = held_out.iter().filter(|r| r.incident).count();
    println!(
        "calibration on {} held-out synthetic rollouts ({incidents} incidents), {} shadow pairs each;",
        held_out.len(),
        config.requests_per_arm
    );
    println!(
        "learned model trained on {} other synthetic rollouts; an inconclusive prediction scores as 0.5\n",
        training.len()
    );
    println!(
        "{:<46} {:>12} {:>8} {:>18}",
        "predictor", "inconclusive", "Brier", "Brier (conclusive)"
    );
    let row = |name: &str, scores: Scores| {
        let conclusive = scores
            .conclusive
            .map_or("-".to_owned(), |b| format!("{b:.4}"));
        println!(
            "{name:<46} {:>11.1}% {:>8.4} {conclusive:>18}",
            scores.inconclusive * 100.0,
            scores.all
        );
    };
    row(
        "threshold (fixed limits)",
        score(ThresholdPredictor::default, &held_out),
    );
    row(
        "sequential (mixture SPRT)",
        score(SequentialPredictor::default, &held_out),
    );
    let new_capacity =
        || CapacityPredictor::new(capacity.clone()).expect("the default capacity is valid");
    row(
        "capacity (M/M/c at 6,400 rps on 8 cores)",
        score(new_capacity, &held_out),
    );
    let learned = LearnedPredictor::new(model.clone());
    row(
        "learned (logistic regression)",
        score(|| learned.clone(), &held_out),
    );
    let ensemble = || {
        Ensemble::max()
            .with(SequentialPredictor::default())
            .with(new_capacity())
            .with(LearnedPredictor::new(model.clone()))
    };
    row(
        "ensemble max(sequential, capacity, learned)",
        score(ensemble, &held_out),
    );
    let weighted = || {
        Ensemble::weighted()
            .with(SequentialPredictor::default())
            .with(new_capacity())
            .with_weight(2.0, LearnedPredictor::new(model.clone()))
    };
    row("ensemble weighted(1, 1, 2)", score(weighted, &held_out));

    // The capacity figures: stable at 80% of capacity at the declared peak.
    let at_80_percent = CapacityPredictor::new(CapacityConfig::new(6_400.0, 8))?;
    for (label, factor) in [
        ("+30% CPU per request", 1.3),
        ("equal CPU per request", 1.0),
    ] {
        let prediction = at_80_percent.predict(&cpu_evidence(factor));
        println!(
            "\ncapacity, {label}, stable at 80% of 8 cores at the peak: failure probability {:.3}",
            prediction.failure_probability
        );
        if let Some(reason) = prediction.reasons.first() {
            println!("  {reason}");
        }
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bootstrap") => bootstrap(&args),
        Some("train") => train(&args),
        None | Some("calibrate") => calibrate(),
        Some(other) => {
            Err(format!("unknown command {other}: use bootstrap, train or calibrate").into())
        }
    }
}
