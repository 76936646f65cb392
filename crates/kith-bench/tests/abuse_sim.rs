//! The abuse simulator runs end to end on a small population and its policy catches every
//! abuser without touching a normal account. (The full-size run and its figures are in
//! BENCHMARKS.md; speed is not asserted here.)

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

#[test]
fn a_small_population_is_scored() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kith-bench"))
        .args(["abuse-sim", "--normal", "30", "--abusers", "4", "--hours", "6", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in ["precision", "recall", "false_positive_rate", "median_messages_before_action"] {
        assert!(last[key].is_number(), "{key} missing: {last}");
    }
    assert_eq!(last["recall"], 1.0, "{stdout}");
    assert_eq!(last["false_positive_rate"], 0.0, "{stdout}");
    assert!(last["normal_messages"].as_u64().unwrap() > 100, "{stdout}");
}
