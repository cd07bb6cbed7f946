//! AFL++ harness for every target of `spate::fuzz`, coverage-guided on stable Rust through
//! cargo-afl: `spate-afl TARGET` reads inputs the way AFL++ hands them over and runs the
//! target's body. It refuses to hold any logic of its own; see README "Fuzzing".

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = spate::fuzz::target(&name) else {
        let names: Vec<&str> = spate::fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: spate-afl TARGET, one of: {}", names.join(" "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
