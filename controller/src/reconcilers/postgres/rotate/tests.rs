//! Tests of the rotation flow: who a request names, the logins, when a
//! rotation starts, and each step of the superuser's.

use super::*;

#[test]
fn a_request_names_its_user_or_means_the_app_user() {
    assert_eq!(requested_user("1700000000"), Ok(RotatedUser::App));
    assert_eq!(requested_user("t user=app"), Ok(RotatedUser::App));
    assert_eq!(
        requested_user("t user=superuser"),
        Ok(RotatedUser::Superuser)
    );
    assert!(requested_user("t user=root").is_err());
    assert_eq!(next_purpose(purpose::APP), "app-password-next");
}

fn pgc() -> PostgresCluster {
    let text = "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n  bootstrap:\n    owner: shop\n";
    match haswarm_crds::manifest::parse("t.yaml", text, &haswarm_crds::manifest::Limits::default())
        .expect("valid")
        .into_iter()
        .next()
        .map(|d| d.resource)
    {
        Some(haswarm_crds::AnyResource::PostgresCluster(p)) => *p,
        other => panic!("not a PostgresCluster: {other:?}"),
    }
}

#[test]
fn app_logins_alternate_and_each_has_its_own_password() {
    let p = pgc();
    let mut status = PostgresClusterStatus::default();
    assert_eq!(target_login(&p, &status), "shop");
    status.app_user = Some("shop".into());
    assert_eq!(target_login(&p, &status), "shop_alt");
    status.app_user = Some("shop_alt".into());
    assert_eq!(target_login(&p, &status), "shop");
    assert_eq!(login_purpose(&p, "shop"), purpose::APP);
    assert_eq!(login_purpose(&p, "shop_alt"), purpose::APP_ALT);
    assert_eq!(role_of(&p, &status, RotatedUser::Superuser), "postgres");
}

fn with(pgc: &mut PostgresCluster, yaml: &str) {
    // A spec change of credentials, written as a user would.
    let c: haswarm_crds::postgres::PostgresCredentials =
        serde_json::from_value(serde_json::from_str(yaml).expect("json")).expect("credentials");
    pgc.spec.credentials = c;
}

fn asked(pgc: &mut PostgresCluster, value: &str) {
    pgc.metadata
        .annotations
        .insert(ROTATE_PASSWORD_ANNOTATION.to_owned(), value.to_owned());
}

fn rotating(user: RotatedUser, phase: PgRotationPhase) -> PgPasswordRotation {
    PgPasswordRotation {
        requested: Some("t1".into()),
        user: Some(user),
        phase: Some(phase),
        from_secret: None,
    }
}

fn app_set() -> PostgresClusterStatus {
    PostgresClusterStatus {
        app_user: Some("shop".into()),
        app_password_secret: Some("db-app-password-abc".into()),
        ..Default::default()
    }
}

#[test]
fn nothing_starts_without_a_request_or_a_new_spec_secret() {
    let p = pgc();
    assert_eq!(plan_start(&p, &app_set(), None), Start::Continue);
    // A request already handled starts nothing.
    let mut p = pgc();
    asked(&mut p, "t1");
    let mut st = app_set();
    st.password_rotation = Some(PgPasswordRotation {
        requested: Some("t1".into()),
        ..Default::default()
    });
    assert_eq!(plan_start(&p, &st, None), Start::Continue);
    assert_eq!(Start::Continue.apply(&mut st), (None, None));
}

#[test]
fn a_rotation_under_way_goes_on_whatever_is_asked() {
    let mut p = pgc();
    asked(&mut p, "t2 user=superuser");
    with(&mut p, r#"{"superuserSecret": {"name": "su-new"}}"#);
    let mut st = app_set();
    st.password_rotation = Some(rotating(RotatedUser::App, PgRotationPhase::Alter));
    assert_eq!(plan_start(&p, &st, Some("su-old")), Start::Continue);
    let (r, n) = Start::Continue.apply(&mut st);
    assert_eq!(r, st.password_rotation, "the rotation in progress renders");
    assert_eq!(n, None);
}

#[test]
fn a_request_for_the_app_user_waits_for_its_first_login() {
    let mut p = pgc();
    asked(&mut p, "t1");
    let mut st = PostgresClusterStatus::default();
    assert_eq!(plan_start(&p, &st, None), Start::Wait);
    assert_eq!(Start::Wait.apply(&mut st), (None, None));
    assert_eq!(st, PostgresClusterStatus::default(), "nothing recorded");
}

#[test]
fn a_request_begins_with_a_fresh_password_for_the_login_not_in_use() {
    let mut p = pgc();
    asked(&mut p, "t1");
    let mut st = app_set();
    let start = plan_start(&p, &st, None);
    let Start::Begin {
        user,
        fresh,
        requested,
        ..
    } = &start
    else {
        panic!("{start:?}");
    };
    assert_eq!(*user, RotatedUser::App);
    assert_eq!(fresh.as_deref(), Some("app-alt-password-next"));
    assert_eq!(requested.as_deref(), Some("t1"));
    let (r, n) = start.apply(&mut st);
    let r = r.expect("renders");
    assert_eq!(r.phase, Some(PgRotationPhase::Alter));
    assert_eq!(r.user, Some(RotatedUser::App));
    assert_eq!(st.password_rotation, Some(r));
    let n = n.expect("an event");
    assert_eq!((n.type_, n.reason), (EventType::Normal, "PasswordRotation"));
    assert!(n.message.contains("login shop_alt"), "{}", n.message);
    // The superuser's request: its next password.
    let mut p = pgc();
    asked(&mut p, "t2 user=superuser");
    match plan_start(&p, &app_set(), None) {
        Start::Begin { user, fresh, .. } => {
            assert_eq!(user, RotatedUser::Superuser);
            assert_eq!(fresh.as_deref(), Some("superuser-password-next"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_requests_are_recorded_as_handled_with_a_warning() {
    let cases = [
        ("t1 user=root", "", "unknown user"),
        (
            "t1 user=superuser",
            r#"{"superuserSecret": {"name": "mine"}}"#,
            "named in spec.credentials",
        ),
    ];
    for (request, credentials, says) in cases {
        let mut p = pgc();
        asked(&mut p, request);
        if !credentials.is_empty() {
            with(&mut p, credentials);
        }
        let mut st = app_set();
        // `mine` is the secret mounted: no spec change.
        let start = plan_start(&p, &st, Some("mine"));
        assert!(
            matches!(&start, Start::Skip { why, .. } if why.contains(says)),
            "{request}: {start:?}"
        );
        let (r, n) = start.apply(&mut st);
        assert_eq!(r, None);
        let n = n.expect("a warning");
        assert_eq!((n.type_, n.reason), (EventType::Warning, "RotationSkipped"));
        assert_eq!(
            st.password_rotation.and_then(|r| r.requested).as_deref(),
            Some(request),
            "handled: not refused again at every pass"
        );
    }
}

#[test]
fn a_new_spec_secret_begins_a_rotation_from_the_one_in_use() {
    // The superuser's: the instances mount the old one.
    let mut p = pgc();
    with(&mut p, r#"{"superuserSecret": {"name": "su-new"}}"#);
    let mut st = app_set();
    assert_eq!(plan_start(&p, &st, Some("su-new")), Start::Continue);
    let start = plan_start(&p, &st, Some("su-old"));
    assert_eq!(
        start,
        Start::Begin {
            user: RotatedUser::Superuser,
            requested: None,
            from_secret: Some("su-old".into()),
            fresh: None,
            why: "spec.credentials names su-new for postgres (the instances use su-old): setting its password in PostgreSQL".into(),
        }
    );
    let (r, _) = start.apply(&mut st);
    assert_eq!(r.and_then(|r| r.from_secret).as_deref(), Some("su-old"));
    // The app user's: status names the secret in use.
    let mut p = pgc();
    with(&mut p, r#"{"appUserSecret": {"name": "app-new"}}"#);
    match plan_start(&p, &app_set(), None) {
        Start::Begin {
            user, from_secret, ..
        } => {
            assert_eq!(user, RotatedUser::App);
            assert_eq!(from_secret.as_deref(), Some("db-app-password-abc"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_superusers_rotation_alters_then_uses_then_ends() {
    use PgRotationPhase::{Alter, Use};
    let su = |phase| Some(rotating(RotatedUser::Superuser, phase));
    let app = Some(rotating(RotatedUser::App, Alter));
    // (rotation, settled leader, next secret) -> step
    let table = [
        (None, Some("db-pg-0"), None, SuperuserStep::Idle),
        (app, Some("db-pg-0"), Some("n"), SuperuserStep::Idle),
        (
            Some(PgPasswordRotation {
                phase: None,
                ..rotating(RotatedUser::Superuser, Alter)
            }),
            Some("db-pg-0"),
            None,
            SuperuserStep::Idle,
        ),
        (
            su(Alter),
            None,
            Some("n"),
            SuperuserStep::Wait("password rotation (Alter) waits for a settled cluster".into()),
        ),
        (
            su(Alter),
            Some("db-pg-0"),
            None,
            SuperuserStep::Wait("password rotation: preparing".into()),
        ),
        (
            su(Alter),
            Some("db-pg-0"),
            Some("n"),
            SuperuserStep::Alter {
                leader: "db-pg-0".into(),
                new: "n".into(),
            },
        ),
        (su(Use), Some("db-pg-0"), None, SuperuserStep::Finish),
    ];
    for (rotation, leader, next, want) in table {
        assert_eq!(
            superuser_step(rotation.as_ref(), leader, next),
            want,
            "{rotation:?} {leader:?} {next:?}"
        );
    }
    // Use waits for a settled cluster too: the rollout to the new secret.
    assert!(matches!(
        superuser_step(su(Use).as_ref(), None, None),
        SuperuserStep::Wait(_)
    ));
    // The transitions the steps' outcomes make.
    let mut r = rotating(RotatedUser::Superuser, Alter);
    r.from_secret = Some("su-old".into());
    let n = altered(&mut r);
    assert_eq!(r.phase, Some(Use));
    assert_eq!(
        r.from_secret.as_deref(),
        Some("su-old"),
        "kept until the end"
    );
    assert_eq!(n.reason, "PasswordRotation");
    let n = finished(&mut r);
    assert_eq!((r.phase, r.from_secret), (None, None));
    assert_eq!(
        r.requested.as_deref(),
        Some("t1"),
        "the request stays handled"
    );
    assert!(n.message.contains("every instance uses the new secret"));
}
