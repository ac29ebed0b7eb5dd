//! The source task's timing rules (`docs/agent.md`), in virtual time: a
//! scripted backend answers, `tokio::time` is paused and advances only when
//! every task waits, so minutes of lease life take milliseconds. Each test
//! reads the times of the calls the task made.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{HeldLeases, Source, SourceTask, Update};
use crate::backend::{BackendError, Fetched, Lease, SecretBackend};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// What a scripted read returns.
#[derive(Debug, Clone)]
enum Read {
    /// A lease of this lifetime.
    Lease { ttl: u64, renewable: bool },
    /// A secret at this version.
    Version(&'static str),
    /// A secret with no version.
    Plain,
    /// A failure.
    Fail(BackendError),
}

/// One call the task made, with the virtual time it was made at (seconds
/// since the start).
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Read(f64),
    Renew(f64, Duration),
    Version(f64),
}

impl Call {
    fn at(&self) -> f64 {
        match self {
            Call::Read(t) | Call::Renew(t, _) | Call::Version(t) => *t,
        }
    }
}

/// Answers from queues; the last answer of each queue repeats.
#[derive(Clone)]
struct Script(Arc<Mutex<ScriptState>>);

struct ScriptState {
    start: Instant,
    reads: VecDeque<Read>,
    renewals: VecDeque<Result<u64, BackendError>>,
    /// Renewals never answer (a store cut off mid-request).
    hang_renewals: bool,
    versions: VecDeque<Result<&'static str, BackendError>>,
    calls: Vec<Call>,
    /// The login every new lease belongs to, and the known ends of logins.
    generation: u64,
    deadlines: Vec<(u64, Instant)>,
    leases: u64,
}

fn next<T: Clone>(q: &mut VecDeque<T>) -> T {
    if q.len() > 1 { q.pop_front().expect("not empty") } else { q.front().cloned().expect("a scripted answer") }
}

impl Script {
    fn new(reads: Vec<Read>) -> Self {
        Script(Arc::new(Mutex::new(ScriptState {
            start: Instant::now(),
            reads: reads.into(),
            renewals: VecDeque::new(),
            hang_renewals: false,
            versions: VecDeque::new(),
            calls: Vec::new(),
            generation: 1,
            deadlines: Vec::new(),
            leases: 0,
        })))
    }

    fn renewals(self, r: Vec<Result<u64, BackendError>>) -> Self {
        self.0.lock().unwrap().renewals = r.into();
        self
    }

    fn versions(self, v: Vec<Result<&'static str, BackendError>>) -> Self {
        self.0.lock().unwrap().versions = v.into();
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    fn reads(&self) -> Vec<f64> {
        self.calls().iter().filter_map(|c| if let Call::Read(t) = c { Some(*t) } else { None }).collect()
    }

    /// A new login: the old one ends at `ends_in` from now.
    fn relogin(&self, ends_in: Duration) {
        let mut s = self.0.lock().unwrap();
        let old = s.generation;
        s.deadlines.push((old, Instant::now() + ends_in));
        s.generation += 1;
    }

    fn record(&self, call: impl FnOnce(f64) -> Call) {
        let mut s = self.0.lock().unwrap();
        let t = (Instant::now() - s.start).as_secs_f64();
        s.calls.push(call(t));
    }
}

impl SecretBackend for Script {
    async fn read(&self, _: &sidekey::reference::Reference) -> Result<Fetched, BackendError> {
        self.record(Call::Read);
        let mut s = self.0.lock().unwrap();
        let answer = next(&mut s.reads);
        s.leases += 1;
        let secret = Arc::new(Secret::from_fields(json!({"password": "not-a-real-one"})));
        let fetched = |version: Option<&str>, lease: Option<Lease>| Fetched {
            certificate: None,
            secret: secret.clone(),
            version: version.map(str::to_owned),
            check: version.map(|_| "secret/metadata/app".to_owned()),
            lease,
            owner: s.generation,
        };
        match answer {
            Read::Lease { ttl, renewable } => Ok(fetched(
                None,
                Some(Lease {
                    id: format!("database/creds/app/{}", s.leases),
                    ttl: Duration::from_secs(ttl),
                    renewable,
                }),
            )),
            Read::Version(v) => Ok(fetched(Some(v), None)),
            Read::Plain => Ok(fetched(None, None)),
            Read::Fail(e) => Err(e),
        }
    }

    async fn version(&self, _: &str) -> Result<String, BackendError> {
        self.record(Call::Version);
        next(&mut self.0.lock().unwrap().versions).map(str::to_owned)
    }

    async fn renew(&self, _: &Lease, increment: Duration) -> Result<Duration, BackendError> {
        self.record(|t| Call::Renew(t, increment));
        if self.0.lock().unwrap().hang_renewals {
            std::future::pending::<()>().await;
        }
        next(&mut self.0.lock().unwrap().renewals).map(Duration::from_secs)
    }

    fn owner_deadline(&self, owner: u64) -> Option<Instant> {
        self.0.lock().unwrap().deadlines.iter().find(|(g, _)| *g == owner).map(|(_, d)| *d)
    }
}

/// A running source task over `script`.
struct Run {
    script: Script,
    updates: Arc<Mutex<Vec<Update>>>,
    logins: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(script: Script, refresh: Duration, once: bool) -> Run {
    let (tx, mut rx) = mpsc::channel(4);
    let (logins, logins_rx) = watch::channel(0);
    let (stop, stop_rx) = watch::channel(false);
    let reference: sidekey::reference::Reference = "vault:database/creds/app".parse().unwrap();
    let task = SourceTask {
        index: 0,
        source: Source {
            name: reference.to_string(),
            reference,
            required: true,
            cert: None,
            template_path: false,
            write: None,
        },
        backend: script.clone(),
        refresh: crate::schedule::Refresh { period: refresh, epoch: tokio::time::Instant::now() },
        tx,
        logins: Some(logins_rx),
        metrics: Arc::new(Metrics::default()),
        once,
        shutdown: stop_rx,
        leases: HeldLeases::default(),
        state: None,
    };
    let updates = Arc::new(Mutex::new(Vec::new()));
    let sink = updates.clone();
    tokio::spawn(async move {
        while let Some(u) = rx.recv().await {
            sink.lock().unwrap().push(u);
        }
    });
    Run { script, updates, logins, stop, task: tokio::spawn(task.run()) }
}

/// Lets `secs` of virtual time pass.
async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn within(x: f64, lo: f64, hi: f64) -> bool {
    (lo - 1e-3..=hi + 1e-3).contains(&x)
}

const REFRESH: Duration = Duration::from_secs(300);

#[tokio::test(start_paused = true)]
async fn renews_a_lease_at_two_thirds_of_its_lifetime_with_jitter() {
    let run = start(Script::new(vec![Read::Lease { ttl: 30, renewable: true }]).renewals(vec![Ok(30)]), REFRESH, false);
    pass(600).await;
    let calls = run.script.calls();
    assert_eq!(run.script.reads(), [0.0], "renewed, never read again: {calls:?}");
    let renewals: Vec<f64> = calls.iter().filter(|c| matches!(c, Call::Renew(..))).map(Call::at).collect();
    assert!(renewals.len() >= 25, "{renewals:?}");
    assert!(within(renewals[0], 18.0, 22.0), "first renewal at {}", renewals[0]);
    for g in gaps(&renewals) {
        assert!(within(g, 18.0, 22.0), "renewed {g} s after the last renewal of a 30 s lease");
    }
    assert!(calls.iter().all(|c| !matches!(c, Call::Renew(_, inc) if *inc != Duration::from_secs(30))));
    let distinct: std::collections::BTreeSet<u64> = gaps(&renewals).iter().map(|g| (g * 1000.0) as u64).collect();
    assert!(distinct.len() > 1, "renewals are jittered");
}

#[tokio::test(start_paused = true)]
async fn replaces_a_capped_lease_while_a_third_of_it_is_left() {
    let script = Script::new(vec![Read::Lease { ttl: 30, renewable: true }]).renewals(vec![Ok(30), Ok(9), Ok(30)]);
    let run = start(script, REFRESH, false);
    pass(60).await;
    let calls = run.script.calls();
    let capped_at = calls.iter().filter(|c| matches!(c, Call::Renew(..))).nth(1).map(Call::at).expect("two renewals");
    let reads = run.script.reads();
    assert!(reads.len() >= 2, "{calls:?}");
    assert!(
        within(reads[1] - capped_at, 6.0, 6.0),
        "9 s granted: replaced with 3 s left, not {}",
        reads[1] - capped_at
    );
    assert!(run.updates.lock().unwrap().len() >= 2, "the new credential reaches the renderer");
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_cannot_be_renewed_is_replaced_with_a_third_left() {
    let run = start(Script::new(vec![Read::Lease { ttl: 30, renewable: false }]), REFRESH, false);
    pass(70).await;
    assert_eq!(run.script.reads(), [0.0, 20.0, 40.0, 60.0]);
    assert!(run.script.calls().iter().all(|c| !matches!(c, Call::Renew(..))));
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_fetches_a_new_credential_at_once() {
    let script = Script::new(vec![Read::Lease { ttl: 30, renewable: true }])
        .renewals(vec![Err(BackendError::Permanent("lease not found".into())), Ok(30)]);
    let run = start(script, REFRESH, false);
    pass(25).await;
    let calls = run.script.calls();
    let Call::Renew(refused, _) = calls[1] else { panic!("{calls:?}") };
    assert_eq!(calls[2], Call::Read(refused), "read at the instant of the refusal");
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_back_off_and_a_lease_that_ended_is_replaced() {
    let script = Script::new(vec![Read::Lease { ttl: 12, renewable: true }])
        .renewals(vec![Err(BackendError::Transient("connection refused".into()))]);
    let run = start(script, REFRESH, false);
    pass(20).await;
    let calls = run.script.calls();
    let second_read = calls.iter().skip(1).position(|c| matches!(c, Call::Read(_))).expect("read again") + 1;
    let renewals: Vec<f64> =
        calls[..second_read].iter().filter(|c| matches!(c, Call::Renew(..))).map(Call::at).collect();
    for (i, g) in gaps(&renewals).iter().enumerate() {
        let step = 0.5 * f64::from(1u32 << i);
        assert!(within(*g, step / 2.0, step), "retry {i} after {g} s, not in the backoff step {step}");
    }
    let (last_try, read) = (renewals[renewals.len() - 1], calls[second_read].at());
    assert!(last_try >= 12.0, "renewals go on while the lease lasts: {calls:?}");
    assert!(renewals[renewals.len() - 2] < 12.0, "{calls:?}");
    assert_eq!(read, last_try, "the first failure after the lease ended reads a new one");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_never_answers_gives_up_when_the_lease_ends() {
    let script = Script::new(vec![Read::Lease { ttl: 12, renewable: true }]).renewals(vec![Ok(12)]);
    script.0.lock().unwrap().hang_renewals = true;
    let run = start(script, REFRESH, false);
    pass(20).await;
    let calls = run.script.calls();
    let renewal = calls.iter().find(|c| matches!(c, Call::Renew(..))).map(Call::at).expect("a renewal");
    let read = calls.iter().skip(1).find(|c| matches!(c, Call::Read(_))).map(Call::at).expect("read again");
    assert!(renewal < 12.0, "{calls:?}");
    assert!(within(read, 12.0, 12.5), "a new read at the lease's end, not after the client's timeout: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lease_is_replaced_before_the_token_that_owns_it_ends() {
    let script = Script::new(vec![Read::Lease { ttl: 90, renewable: true }]).renewals(vec![Ok(90)]);
    let run = start(script, REFRESH, false);
    pass(5).await;
    // A new login; the old token (which owns the lease) ends in 60 s, at
    // t = 65 s: the lease must be replaced a third of its 90 s before that.
    run.script.relogin(Duration::from_secs(60));
    run.logins.send(2).unwrap();
    pass(40).await;
    let reads = run.script.reads();
    assert_eq!(reads, [0.0, 35.0], "{:?}", run.script.calls());
    assert!(run.script.calls().iter().all(|c| !matches!(c, Call::Renew(..))), "no renewal was due before 35 s");
}

#[tokio::test(start_paused = true)]
async fn versioned_secrets_are_checked_every_refresh_and_read_only_when_the_version_moves() {
    let script = Script::new(vec![Read::Version("1"), Read::Version("2")]).versions(vec![Ok("1"), Ok("1"), Ok("2")]);
    let run = start(script, Duration::from_secs(100), false);
    pass(350).await;
    let calls = run.script.calls();
    let checks: Vec<f64> = calls.iter().filter(|c| matches!(c, Call::Version(..))).map(Call::at).collect();
    assert!(within(checks[0], 90.0, 110.0), "{checks:?}");
    assert!(gaps(&checks[..3]).iter().all(|g| within(*g, 90.0, 110.0)), "{checks:?}");
    let reads = run.script.reads();
    assert_eq!(reads.len(), 2, "read again only after the version moved: {calls:?}");
    assert_eq!(reads[1], checks[2], "read at the check that saw version 2");
}

#[tokio::test(start_paused = true)]
async fn unversioned_secrets_are_read_again_every_refresh() {
    let run = start(Script::new(vec![Read::Plain]), Duration::from_secs(100), false);
    pass(450).await;
    let reads = run.script.reads();
    assert_eq!(reads.len(), 5, "{reads:?}");
    assert!(gaps(&reads).iter().all(|g| within(*g, 90.0, 110.0)), "{reads:?}");
}

#[tokio::test(start_paused = true)]
async fn failed_reads_back_off_exponentially_and_report_each_failure() {
    let transient = || Read::Fail(BackendError::Transient("503 from Vault".into()));
    let script = Script::new(vec![transient(), transient(), transient(), transient(), Read::Plain]);
    let run = start(script, REFRESH, false);
    pass(20).await;
    let reads = run.script.reads();
    assert_eq!(reads.len(), 5, "{reads:?}");
    for (i, g) in gaps(&reads).iter().enumerate() {
        let step = 0.5 * f64::from(1u32 << i);
        assert!(within(*g, step / 2.0, step), "retry {i} after {g} s, not in the backoff step {step}");
    }
    let updates = run.updates.lock().unwrap();
    assert_eq!(updates.iter().filter(|u| matches!(u, Update::Failed { .. })).count(), 4);
    assert!(matches!(updates.last(), Some(Update::Data { .. })));
}

#[tokio::test(start_paused = true)]
async fn permanent_read_errors_are_retried_slowly() {
    let script = Script::new(vec![Read::Fail(BackendError::Permanent("no such path".into())), Read::Plain]);
    let run = start(script, REFRESH, false);
    pass(120).await;
    let reads = run.script.reads();
    assert!(within(reads[1] - reads[0], 60.0, 60.0), "retried after min(refresh, 60 s), not {reads:?}");
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_run_stops_at_a_denial_and_after_its_first_read() {
    let run = start(Script::new(vec![Read::Fail(BackendError::Denied("permission denied".into()))]), REFRESH, true);
    pass(600).await;
    assert!(run.task.is_finished());
    assert_eq!(run.script.reads(), [0.0]);
    let run = start(Script::new(vec![Read::Lease { ttl: 30, renewable: true }]), REFRESH, true);
    pass(600).await;
    assert!(run.task.is_finished());
    assert_eq!(run.script.calls(), [Call::Read(0.0)], "no renewals after a one-shot read");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_task_that_waits_for_its_next_renewal() {
    let run = start(Script::new(vec![Read::Lease { ttl: 3600, renewable: true }]), REFRESH, false);
    pass(10).await;
    run.stop.send(true).unwrap();
    pass(1).await;
    assert!(run.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn pods_started_together_do_not_renew_together() {
    let runs: Vec<Run> = (0..20)
        .map(|_| {
            start(Script::new(vec![Read::Lease { ttl: 60, renewable: true }]).renewals(vec![Ok(60)]), REFRESH, false)
        })
        .collect();
    pass(50).await;
    let firsts: Vec<f64> = runs
        .iter()
        .map(|r| r.script.calls().iter().find(|c| matches!(c, Call::Renew(..))).map(Call::at).expect("renewed"))
        .collect();
    assert!(firsts.iter().all(|t| within(*t, 36.0, 44.0)), "{firsts:?}");
    let spread = firsts.iter().copied().fold(f64::MIN, f64::max) - firsts.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 1.0, "20 agents renewed within {spread} s of each other: {firsts:?}");
}

#[test]
fn a_go_template_reads_each_of_its_paths_through_one_shared_source() {
    let mut config = sidekey::agent_config::AgentConfig::from_json(&serde_json::json!({
        "mountPath": "/m",
        "vault": {"addr": "http://127.0.0.1:8200", "auth": {"method": "token", "tokenPath": "/t"}},
        "files": [
            {"name": "db", "ref": "vault:database/creds/app#username", "mode": "0400"},
            {"name": "app.conf", "ref": "vault:secret/data/app", "format": "go-template", "mode": "0400",
             "template": "{{ with secret \"secret/data/app\" }}{{ end }}{{ with secret \"database/creds/app\" }}{{ .Data.password }}{{ end }}"},
            {"name": "other.conf", "ref": "vault:secret/data/app", "format": "go-template", "mode": "0400",
             "template": "{{ with secret \"database/creds/app\" }}{{ .Data.username }}{{ end }}"}
        ]
    }).to_string()).unwrap();
    config.files[1].optional = false;
    let plan = super::Plan::new(&config.clone().check().unwrap());
    let names: Vec<&str> = plan.sources.iter().map(|s| s.name.as_str()).collect();
    // Templates share a path's source; a template's path is read as
    // consul-template reads it, so it is not the reference's source.
    assert_eq!(
        names,
        ["vault:database/creds/app", "template vault:secret/data/app", "template vault:database/creds/app"]
    );
    assert_eq!(plan.file_sources, [vec![0], vec![1, 2], vec![2]]);
    assert!(plan.sources[1].template_path && !plan.sources[0].template_path);
}

#[test]
fn a_template_write_is_a_source_per_path_and_fields() {
    let t = |cn: &str| {
        format!("{{{{ with secret \"pki/issue/web\" \"common_name={cn}\" }}}}{{{{ .Data.certificate }}}}{{{{ end }}}}")
    };
    let config = sidekey::agent_config::AgentConfig::from_json(
        &serde_json::json!({
            "mountPath": "/m",
            "vault": {"addr": "http://127.0.0.1:8200", "auth": {"method": "token", "tokenPath": "/t"}},
            "files": [
                {"name": "a", "ref": "vault:pki/issue/web", "format": "go-template", "mode": "0400", "template": t("a.shop.svc")},
                {"name": "a2", "ref": "vault:pki/issue/web", "format": "go-template", "mode": "0400", "template": t("a.shop.svc")},
                {"name": "b", "ref": "vault:pki/issue/web", "format": "go-template", "mode": "0400", "template": t("b.shop.svc")}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let plan = super::Plan::new(&config.clone().check().unwrap());
    assert_eq!(plan.file_sources, [vec![0], vec![0], vec![1]]);
    assert_eq!(plan.sources[0].write.as_deref(), Some(&[("common_name".to_owned(), "a.shop.svc".to_owned())][..]));
    assert_eq!(plan.sources[1].name, "template write vault:pki/issue/web common_name=b.shop.svc");
}
