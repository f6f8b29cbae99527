//! The group's decisions as tables: a script of what was heard and when, then the verdict.

use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

const T: Timing = Timing {
    interval: Duration::from_secs(1),
    loss_timeout: Duration::from_secs(10),
    join_timeout: Duration::from_secs(60),
};

fn report(rank: u32, instance: &str, state: MemberState) -> Report {
    Report {
        rank,
        nnodes: 3,
        instance: instance.into(),
        state,
        detail: (state == MemberState::Failed).then(|| "exit 1".into()),
        joined: None,
    }
}

use MemberState::{Failed, Running, Starting, Stopping};

/// (what, reports as (at, rank, instance, state), checked at, verdict) for a group of 3 whose
/// leader started waiting at 0.
#[test]
fn the_leader_judges_its_group() {
    let forming = |missing: &[u32], starting: &[u32]| Verdict::Forming {
        missing: missing.to_vec(),
        starting: starting.to_vec(),
    };
    let lost = |rank, cause| Verdict::Lost(Lost { rank, cause });
    type Row = (
        &'static str,
        Vec<(u64, u32, &'static str, MemberState)>,
        u64,
        Verdict,
    );
    let rows: Vec<Row> = vec![
        ("nobody yet", vec![], 5, forming(&[1, 2], &[])),
        (
            "one starting, one missing",
            vec![(1, 1, "a", Starting)],
            5,
            forming(&[2], &[1]),
        ),
        (
            "both running",
            vec![(1, 1, "a", Running), (2, 2, "b", Running)],
            3,
            Verdict::Complete,
        ),
        (
            "a starting worker is waited for past the join timeout (it may be downloading)",
            vec![
                (58, 1, "a", Starting),
                (59, 2, "b", Starting),
                (61, 1, "a", Starting),
                (61, 2, "b", Starting),
            ],
            65,
            forming(&[], &[1, 2]),
        ),
        (
            "a rank never heard from within the join timeout is named",
            vec![(50, 1, "a", Running), (59, 1, "a", Running)],
            60,
            Verdict::NeverCame {
                missing: vec![2],
                waited: s(60),
            },
        ),
        (
            "just before the join timeout it is still forming",
            vec![(55, 1, "a", Running)],
            59,
            forming(&[2], &[]),
        ),
        (
            "a worker whose engine failed loses the group",
            vec![
                (1, 1, "a", Running),
                (2, 2, "b", Running),
                (3, 2, "b", Failed),
            ],
            4,
            lost(2, LossCause::Failed(Some("exit 1".into()))),
        ),
        (
            "a worker asked to stop loses the group",
            vec![
                (1, 1, "a", Running),
                (2, 2, "b", Running),
                (3, 1, "a", Stopping),
            ],
            4,
            lost(1, LossCause::Stopped),
        ),
        (
            "a worker that restarted (new instance) loses the group, even while running again",
            vec![
                (1, 1, "a", Running),
                (2, 2, "b", Running),
                (5, 1, "a2", Starting),
                (6, 1, "a2", Running),
            ],
            7,
            lost(1, LossCause::Restarted),
        ),
        (
            "a worker silent past the loss timeout loses the group",
            vec![
                (1, 1, "a", Running),
                (2, 2, "b", Running),
                (20, 2, "b", Running),
            ],
            20,
            lost(1, LossCause::Silent(s(19))),
        ),
        (
            "silent exactly the loss timeout is not yet lost",
            vec![(10, 1, "a", Running), (20, 2, "b", Running)],
            20,
            Verdict::Complete,
        ),
        (
            "the first loss stands: a later failure does not replace it",
            vec![
                (1, 1, "a", Running),
                (2, 2, "b", Failed),
                (3, 1, "a", Failed),
            ],
            4,
            lost(2, LossCause::Failed(Some("exit 1".into()))),
        ),
    ];
    for (what, script, at, want) in rows {
        let mut r = Roster::new(3);
        for (t, rank, inst, state) in script {
            r.report(&report(rank, inst, state), s(t), "L")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert_eq!(r.check(s(at), s(0), &T), want, "{what}");
    }
}

#[test]
fn a_loss_is_final() {
    let mut r = Roster::new(2);
    let mut rep = report(1, "a", Running);
    rep.nnodes = 2;
    r.report(&rep, s(1), "L").expect("report");
    assert_eq!(r.check(s(2), s(0), &T), Verdict::Complete);
    // Silent: lost at 12 s.
    let v = r.check(s(12), s(0), &T);
    assert!(matches!(v, Verdict::Lost(_)), "{v:?}");
    // It reports again (same instance): still lost.
    r.report(&rep, s(13), "L").expect("report");
    assert_eq!(r.check(s(13), s(0), &T), v);
}

/// A worker still joined to an earlier leader instance (this leader restarted) is answered
/// but not counted: its last word of failure does not end the new group.
#[test]
fn reports_of_an_earlier_group_are_not_counted() {
    let mut r = Roster::new(2);
    let mut old = report(1, "a", Running);
    old.nnodes = 2;
    old.joined = Some("L1".into());
    assert_eq!(r.report(&old, s(1), "L2"), Ok(Heard::Stale));
    old.state = Failed;
    assert_eq!(r.report(&old, s(2), "L2"), Ok(Heard::Stale));
    let forming = Verdict::Forming {
        missing: vec![1],
        starting: vec![],
    };
    assert_eq!(r.check(s(3), s(0), &T), forming);
    // Joined to this leader, or not joined yet: counted.
    let mut new = report(1, "b", Running);
    new.nnodes = 2;
    assert_eq!(r.report(&new, s(4), "L2"), Ok(Heard::Counted));
    new.joined = Some("L2".into());
    assert_eq!(r.report(&new, s(5), "L2"), Ok(Heard::Counted));
    assert_eq!(r.check(s(6), s(0), &T), Verdict::Complete);
}

#[test]
fn the_leader_refuses_reports_from_another_group() {
    let mut r = Roster::new(3);
    let mut other = report(1, "a", Running);
    other.nnodes = 2;
    let e = r.report(&other, s(1), "L").expect_err("node count");
    assert!(e.to_string().contains("AIM_NNODES"), "{e}");
    for rank in [0, 3, 9] {
        let e = r
            .report(&report(rank, "x", Running), s(1), "L")
            .expect_err("rank");
        assert!(e.to_string().contains(&format!("node rank {rank}")), "{e}");
    }
    // None of them counts.
    assert_eq!(
        r.check(s(2), s(0), &T),
        Verdict::Forming {
            missing: vec![1, 2],
            starting: vec![]
        }
    );
}

fn ack(instance: &str, group: GroupState, ready: bool) -> Ack {
    Ack {
        instance: instance.into(),
        group,
        ready,
        detail: (group == GroupState::Lost).then(|| "node rank 2 lost its engine".into()),
    }
}

/// What a worker hears from its leader.
enum Answer {
    Ack(Ack),
    Error,
    Refused,
}

/// (what, what it heard as (at, answer), checked at, verdict) for a worker that started
/// waiting at 0.
#[test]
fn a_worker_judges_its_link() {
    use GroupState::{Complete, Forming, Lost as GLost, Stopping as GStopping};
    let a = |at, inst, g, ready| (at, Answer::Ack(ack(inst, g, ready)));
    type Row = (&'static str, Vec<(u64, Answer)>, u64, LinkVerdict);
    let rows: Vec<Row> = vec![
        ("nothing heard", vec![], 5, LinkVerdict::Waiting),
        (
            "only errors, within the join timeout",
            vec![(1, Answer::Error), (2, Answer::Error)],
            30,
            LinkVerdict::Waiting,
        ),
        (
            "never answered within the join timeout",
            vec![(1, Answer::Error), (59, Answer::Error)],
            60,
            LinkVerdict::NeverAnswered { waited: s(60) },
        ),
        (
            "joined, the group forming",
            vec![a(1, "L", Forming, false)],
            2,
            LinkVerdict::Joined { serving: false },
        ),
        (
            "joined, the leader serving",
            vec![a(1, "L", Forming, false), a(2, "L", Complete, true)],
            3,
            LinkVerdict::Joined { serving: true },
        ),
        (
            "complete but the leader's engine not ready yet",
            vec![a(2, "L", Complete, false)],
            3,
            LinkVerdict::Joined { serving: false },
        ),
        (
            "errors after joining, within the loss timeout",
            vec![
                a(1, "L", Complete, true),
                (5, Answer::Error),
                (9, Answer::Error),
            ],
            11,
            LinkVerdict::Joined { serving: true },
        ),
        (
            "silent past the loss timeout",
            vec![a(1, "L", Complete, true), (5, Answer::Error)],
            12,
            LinkVerdict::Lost(LinkLost::Silent(s(11))),
        ),
        (
            "the leader restarted",
            vec![a(1, "L", Complete, true), a(3, "L2", Forming, false)],
            4,
            LinkVerdict::Lost(LinkLost::LeaderRestarted),
        ),
        (
            "the leader lost the group",
            vec![a(1, "L", Complete, true), a(3, "L", GLost, false)],
            4,
            LinkVerdict::Lost(LinkLost::GroupLost(Some(
                "node rank 2 lost its engine".into(),
            ))),
        ),
        (
            "the leader is stopping",
            vec![a(1, "L", Complete, true), a(3, "L", GStopping, false)],
            4,
            LinkVerdict::Lost(LinkLost::LeaderStopping),
        ),
        (
            "refused",
            vec![(1, Answer::Refused)],
            2,
            LinkVerdict::Lost(LinkLost::Refused("no".into())),
        ),
        (
            "the first loss stands",
            vec![
                a(1, "L", Forming, false),
                a(2, "L", GStopping, false),
                a(3, "L2", Forming, false),
            ],
            4,
            LinkVerdict::Lost(LinkLost::LeaderStopping),
        ),
        (
            "a lost group before joining is an earlier group's end: waited out",
            vec![a(1, "L", GLost, false), a(2, "L", GStopping, false)],
            3,
            LinkVerdict::Waiting,
        ),
        (
            "then the restarted leader's group is joined",
            vec![a(1, "L", GLost, false), a(3, "L2", Forming, false)],
            4,
            LinkVerdict::Joined { serving: false },
        ),
        (
            "an earlier group's end does not stop the join timeout",
            vec![a(1, "L", GLost, false), a(59, "L", GLost, false)],
            60,
            LinkVerdict::NeverAnswered { waited: s(60) },
        ),
        (
            "another leader instance answering in a lost state, after joining",
            vec![a(1, "L", Complete, true), a(3, "L2", GLost, false)],
            4,
            LinkVerdict::Lost(LinkLost::LeaderRestarted),
        ),
    ];
    for (what, script, at, want) in rows {
        let mut l = Link::default();
        for (t, heard) in script {
            match heard {
                Answer::Ack(a) => l.on_ack(&a, s(t)),
                Answer::Error => l.on_error("connection refused".into()),
                Answer::Refused => l.on_refused("no".into()),
            }
        }
        assert_eq!(l.check(s(at), s(0), &T), want, "{what}");
    }
}

#[test]
fn messages_name_the_rank_the_leader_and_the_fix() {
    let never = Verdict::NeverCame {
        missing: vec![1],
        waited: s(600),
    };
    let m = never.describe(8000);
    for needle in [
        "node rank 1",
        "600s",
        "AIM_NODE_RANK=1",
        "port 8000",
        "--group-join-timeout",
    ] {
        assert!(m.contains(needle), "{needle}: {m}");
    }
    let lost = Verdict::Lost(Lost {
        rank: 2,
        cause: LossCause::Silent(s(21)),
    });
    assert!(
        lost.describe(8000)
            .contains("node rank 2 has not reported for 21s")
    );
    let w = LinkVerdict::NeverAnswered { waited: s(600) };
    let m = w.describe("10.0.0.1:8000", Some("connection refused"));
    for needle in [
        "10.0.0.1:8000",
        "connection refused",
        "AIM_LEADER_ADDR",
        "--group-join-timeout",
    ] {
        assert!(m.contains(needle), "{needle}: {m}");
    }
}

#[test]
fn reports_and_acks_keep_their_wire_form() {
    let r = report(1, "123-4", Running);
    let text = serde_json::to_string(&r).expect("json");
    assert_eq!(
        text,
        r#"{"rank":1,"nnodes":3,"instance":"123-4","state":"running"}"#
    );
    let back: Report = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, r);
    let a: Ack =
        serde_json::from_str(r#"{"instance":"L","group":"complete","ready":true}"#).expect("ack");
    assert_eq!(a, ack("L", GroupState::Complete, true));
}
