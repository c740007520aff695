//! Writes each fuzz target's starting inputs to `corpus/<target>/`, where
//! `cargo fuzz run <target>` looks for its corpus.

#![forbid(unsafe_code)]

use std::path::Path;

use jitgate::fuzzing::seeds::{TARGETS, seeds};

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (number, seed) in seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{number}")), seed)?;
        }
        println!("{}: {} seeds", dir.display(), seeds(target).len());
    }
    Ok(())
}
