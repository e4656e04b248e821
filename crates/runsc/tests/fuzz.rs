//! Fuzzing everything that parses runsc's output: no input may panic the client.

use runsc::{Event, ProcessInfo, State, Version, WaitResult};

#[test]
fn fuzz_runsc_outputs() {
    fuzzkit::fuzz(
        "runsc-json",
        &[
            br#"{"ociVersion":"1.0.2-dev","id":"c","status":"running","pid":42,"bundle":"/b"}"#,
            br#"{"type":"stats","id":"c","data":{"cpu":{"usage":{"total":93089930,"percpu":[1,2]}},"memory":{"usage":{"limit":0,"usage":2027520},"raw":{"rss":1}},"pids":{"current":1},"network_interfaces":[{"Name":"lo","RxBytes":0}]}}"#,
            b"[1,7]",
            br#"[{"UID":0,"PID":1,"PPID":0,"Cmd":"sleep"}]"#,
            br#"{"id":"c","exitStatus":143}"#,
            b"null",
        ],
        |input| {
            let _ = serde_json::from_slice::<State>(input);
            let _ = serde_json::from_slice::<Event>(input);
            let _ = serde_json::from_slice::<Option<Vec<ProcessInfo>>>(input);
            let _ = serde_json::from_slice::<WaitResult>(input);
            let _ = Version::parse(&String::from_utf8_lossy(input));
        },
    );
}

#[test]
fn fuzz_runsc_log() {
    fuzzkit::fuzz(
        "runsc-log",
        &[
            br#"{"msg":"Error setting up root FS","level":"error","time":"t"}{"msg":"creating container: EOF","level":"error","time":"t"}"#,
            b"{\"level\":\"info\",\"msg\":\"x\"}\nnot json\n{\"level\":\"error\",\"msg\":\"y\"}\n",
            b"{{{{",
        ],
        |input| {
            let _ = runsc::log_errors(&String::from_utf8_lossy(input));
        },
    );
}
