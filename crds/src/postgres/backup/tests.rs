//! Backup settings: schedules, repositories and recovery targets.

use super::*;
use crate::validate::EmptyCatalog;

fn s3() -> BackupRepository {
    BackupRepository {
        name: "s3".into(),
        s3: Some(S3Repository {
            endpoint: "s3.example.com:9000".into(),
            bucket: "backups".into(),
            path: default_s3_path(),
            region: default_region(),
            uri_style: UriStyle::Path,
            credentials_secret: SecretRef {
                name: "s3-creds".into(),
            },
            verify_tls: true,
            ca_secret: None,
        }),
        volume: None,
        retention: Retention::default(),
    }
}

fn rules(b: &BackupSettings) -> Vec<String> {
    let mut report = Report::default();
    b.validate(&FieldPath::root().key("backup"), &mut report, &EmptyCatalog);
    report
        .into_errors()
        .into_iter()
        .map(|e| format!("{} {}", e.path, e.rule))
        .collect()
}

#[test]
fn schedules_take_five_cron_fields() {
    for ok in ["* * * * *", "0 3 * * 0", "*/15 * * * 1-5", "0 0 1 * *"] {
        assert!(parse_schedule(ok).is_ok(), "{ok}");
    }
    for (bad, says) in [
        ("0 25 * * *", "is not a cron schedule"),
        ("0 0 3 * * 0", "has 6 fields"),
        ("daily", "has 1 fields"),
        ("", "has 0 fields"),
        ("61 * * * *", "is not a cron schedule"),
    ] {
        let e = parse_schedule(bad).expect_err(bad);
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_valid_backup_section_has_no_problem() {
    let b = BackupSettings {
        repositories: vec![s3()],
        schedules: vec![BackupSchedule {
            schedule: "0 3 * * 0".into(),
            kind: BackupType::Full,
            repository: Some("s3".into()),
        }],
    };
    assert_eq!(rules(&b), Vec::<String>::new());
}

#[test]
fn each_rule_names_its_field() {
    let mut bad = s3();
    bad.name = "S3".into();
    let mut twice = s3();
    twice.retention = Retention {
        full_count: Some(0),
        full_days: None,
    };
    let b = BackupSettings {
        repositories: vec![bad, s3(), twice],
        schedules: vec![BackupSchedule {
            schedule: "0 3 * * 0".into(),
            kind: BackupType::Diff,
            repository: Some("nfs".into()),
        }],
    };
    assert_eq!(
        rules(&b),
        [
            "backup.repositories[0].name backup-repository-name",
            "backup.repositories[2].name backup-repository-unique",
            "backup.repositories[2].retention.fullCount retention-range",
            "backup.schedules[0].repository backup-repository-exists",
        ]
    );
    assert_eq!(
        rules(&BackupSettings::default()),
        ["backup.repositories backup-repositories-count"]
    );
}

#[test]
fn a_volume_repository_needs_its_shared_volume() {
    let v = BackupRepository {
        name: "nfs".into(),
        s3: None,
        volume: Some(VolumeRepository {
            shared_volume: "backups".into(),
        }),
        retention: Retention::default(),
    };
    let b = BackupSettings {
        repositories: vec![v],
        schedules: Vec::new(),
    };
    assert_eq!(
        rules(&b),
        ["backup.repositories[0].volume.sharedVolume shared-volume-exists"]
    );
}

#[test]
fn s3_endpoints_are_host_and_port() {
    for (endpoint, ok) in [
        ("s3.example.com", true),
        ("minio:9000", true),
        ("10.0.0.5:443", true),
        ("https://s3.example.com", false),
        ("minio:0", false),
        ("minio:http", false),
        ("", false),
        ("s3.example.com/bucket", false),
    ] {
        let mut r = s3();
        if let Some(s) = r.s3.as_mut() {
            s.endpoint = endpoint.into();
        }
        let b = BackupSettings {
            repositories: vec![r],
            schedules: Vec::new(),
        };
        assert_eq!(rules(&b).is_empty(), ok, "{endpoint}: {:?}", rules(&b));
    }
}

#[test]
fn recovery_targets() {
    let backup = BackupSettings {
        repositories: vec![s3()],
        schedules: Vec::new(),
    };
    let check = |r: &Recovery, own: &str, b: Option<&BackupSettings>| {
        let mut report = Report::default();
        r.validate(&FieldPath::root().key("recovery"), own, b, &mut report);
        report
            .into_errors()
            .into_iter()
            .map(|e| e.rule.to_owned())
            .collect::<Vec<_>>()
    };
    let base = Recovery {
        source: "db".into(),
        repository: "s3".into(),
        target_time: None,
        target_lsn: None,
        target_name: None,
    };
    assert!(check(&base, "db2", Some(&backup)).is_empty());
    assert_eq!(check(&base, "db", Some(&backup)), ["recovery-source-other"]);
    assert_eq!(check(&base, "db2", None), ["backup-repository-exists"]);
    for (lsn, ok) in [
        ("0/3000060", true),
        ("16/B374D848", true),
        ("3000060", false),
        ("0/xyz", false),
    ] {
        let r = Recovery {
            target_lsn: Some(lsn.into()),
            ..base.clone()
        };
        assert_eq!(check(&r, "db2", Some(&backup)).is_empty(), ok, "{lsn}");
    }
    let two = Recovery {
        target_name: Some("before-migration".into()),
        target_lsn: Some("0/1".into()),
        ..base.clone()
    };
    assert_eq!(check(&two, "db2", Some(&backup)), ["recovery-one-target"]);
}
