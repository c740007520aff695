use super::Dice;
use super::seeds::{TARGETS, run, seeds};

/// One mutation of `input`, of the kinds a fuzzer makes first.
fn mutate(input: &mut Vec<u8>, random: &mut Dice) {
    let at = random.roll(input.len() + 1);
    match random.roll(6) {
        0 if at < input.len() => input[at] ^= 1 << random.roll(8),
        1 if at < input.len() => input[at] = [0, 0xff, 0x7f, 0x80][random.roll(4)],
        2 => input.insert(at, random.number() as u8),
        3 if at < input.len() => {
            input.remove(at);
        }
        4 => input.truncate(at),
        _ => {
            let end = (at + random.roll(16)).min(input.len());
            let copy = input[at..end].to_vec();
            let to = random.roll(input.len() + 1);
            input.splice(to..to, copy);
        }
    }
}

#[test]
fn every_target_has_seeds_that_run_cleanly() {
    for target in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for seed in seeds {
            run(target, &seed);
        }
    }
}

#[test]
fn mutated_and_random_inputs_hold_every_targets_invariants() {
    let mut random = Dice(0x9e37_79b9_7f4a_7c15);
    for target in TARGETS {
        for seed in seeds(target) {
            for _ in 0..400 {
                let mut input = seed.clone();
                for _ in 0..=random.roll(4) {
                    mutate(&mut input, &mut random);
                }
                run(target, &input);
            }
        }
        for _ in 0..200 {
            let input: Vec<u8> = (0..random.roll(300))
                .map(|_| random.number() as u8)
                .collect();
            run(target, &input);
        }
    }
}

#[test]
fn the_seeds_reach_what_the_invariants_are_about() {
    // The query log seed logs its statements; the SFTP and SCP seeds log
    // files: mutations start from inputs that exercise the checks.
    let logged = super::seeds::seeds("sftp_log")
        .iter()
        .map(|seed| {
            let parts = super::segments(&seed[1..]);
            super::sftp_entries(&parts, None).len()
        })
        .sum::<usize>();
    assert_eq!(logged, 3, "the open, the remove and the listing");
    for seed in super::seeds::seeds("scp_log") {
        let at = seed.iter().position(|&b| b == b'\n').unwrap();
        let line = String::from_utf8_lossy(&seed[..at]);
        let parts = super::segments(&seed[at + 2..]);
        assert!(!super::scp_entries(&line, &parts, None).is_empty());
    }
    let seed = &super::seeds::seeds("journal")[0];
    assert_eq!(crate::journal::decode_frames(seed).unwrap().frames.len(), 2);
}
