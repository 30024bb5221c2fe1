//! The binary's start-up contract: a bad setting stops it with one line that
//! names the setting, and never echoes a secret.

use std::process::Command;

fn serve_with(env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_finch-webhooks"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_to_start_on_a_bad_setting_with_one_line_naming_it() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "FINCH_WEBHOOK_SECRET"),
        (
            &[("FINCH_WEBHOOK_SECRET", "%%%not-base64%%%")],
            "FINCH_WEBHOOK_SECRET",
        ),
        (
            &[
                ("FINCH_WEBHOOK_SECRET", "c2VjcmV0"),
                ("WEBHOOK_TOLERANCE_SECS", "0"),
            ],
            "WEBHOOK_TOLERANCE_SECS",
        ),
        (
            &[
                ("FINCH_WEBHOOK_SECRET", "c2VjcmV0"),
                ("DATABASE_URL", "nonsense"),
            ],
            "DATABASE_URL",
        ),
        (
            &[
                ("FINCH_WEBHOOK_SECRET", "c2VjcmV0"),
                ("AMQP_URL", "http://broker"),
            ],
            "AMQP_URL",
        ),
        (
            &[
                ("FINCH_WEBHOOK_SECRET", "c2VjcmV0"),
                ("MAX_BODY_BYTES", "many"),
            ],
            "MAX_BODY_BYTES",
        ),
        (
            &[("FINCH_WEBHOOK_SECRET", "c2VjcmV0"), ("LOG_FORMAT", "xml")],
            "LOG_FORMAT",
        ),
    ];
    for (env, setting) in cases {
        let (code, stderr) = serve_with(env);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line expected, got {stderr}");
        assert!(
            lines[0].starts_with(&format!("finch-webhooks: invalid setting {setting}: ")),
            "{env:?}: {stderr}"
        );
        assert!(
            !stderr.contains("not-base64"),
            "the secret is not echoed: {stderr}"
        );
    }
}
