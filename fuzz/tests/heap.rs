//! The webhook's heap per review, measured by the fuzz targets' counting
//! allocator: the largest hostile AdmissionReviews the limits allow each
//! stay within a fixed bound, so the injector's memory limit holds whatever
//! a pod creator sends (docs/performance.md, "Injector under hostile
//! requests", has the process figures).

#![allow(clippy::unwrap_used, missing_docs)]

use sidekey::config::InjectorConfig;
use sidekey_fuzz::alloc::Bounded;
use sidekey_injector::review::{MAX_BODY, MAX_POD_ELEMENTS, review};

#[global_allocator]
static ALLOC: Bounded = Bounded::new();

/// The most heap one review may use above what was in use before it,
/// besides the request body itself.
const HEAP_BOUND: usize = 24 << 20;

/// An AdmissionReview of a pod, written as text (a `Value` of the largest
/// cases would itself pass the allocator's bound).
fn body(annotations: &str, env: &str, args: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u1","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","namespace":"ns","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","annotations":{{"sidekey.dev/inject":"true"{annotations}}}}},"spec":{{"securityContext":{{"runAsUser":1000,"fsGroup":1000}},"containers":[{{"name":"app","image":"x","env":[{env}],"args":[{args}]}}]}}}}}}}}"#
    )
    .into_bytes()
}

fn joined(n: usize, item: impl Fn(usize) -> String) -> String {
    (0..n).map(item).collect::<Vec<_>>().join(",")
}

/// Ten Go templates: each as large as a template may be and of distinct
/// calls (denied: past the 256 KiB of annotations Kubernetes accepts), or
/// together just under that bound, of two paths called again and again
/// (allowed: the largest template review the bounds let through).
fn templates(distinct: bool) -> String {
    let limit = if distinct {
        sidekey::gotemplate::MAX_TEMPLATE - 64
    } else {
        sidekey::annotations::MAX_ANNOTATION_BYTES / 10 - 200
    };
    joined(10, |i| {
        let call = |j: usize| {
            let path = if distinct { format!("t{i}/p{j:05}") } else { format!("t{}/p{i}", i % 2) };
            format!(r#"{{{{ with secret \"secret/data/{path}\" }}}}{{{{ .Data.data.k }}}}{{{{ end }}}}"#)
        };
        let mut t = String::new();
        for j in 0.. {
            let c = call(j);
            if t.len() + c.len() > limit {
                break;
            }
            t.push_str(&c);
        }
        format!(
            r#""sidekey.dev/secret-f{i}":"vault:secret/data/app","sidekey.dev/format-f{i}":"go-template","sidekey.dev/template-f{i}":"{t}""#
        )
    })
    .replace("\"sidekey.dev/secret-f0", ",\"sidekey.dev/secret-f0")
}

#[test]
fn the_largest_hostile_reviews_stay_within_the_heap_bound() {
    let config = InjectorConfig::for_files();
    let refs = |n: usize, pad: usize| {
        let path = "p".repeat(pad);
        joined(n, |i| format!(r#"{{"name":"S{i}","value":"vault:secret/data/{path}/s{i}#k"}}"#))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tiny values up to the body limit", body("", "", &joined(1_500_000, |_| "0".into()))),
        (
            "plain annotations just under the element bound",
            body(&format!(",{}", joined(MAX_POD_ELEMENTS / 2 - 50, |i| format!(r#""a{i}":"""#))), "", ""),
        ),
        (
            "45,000 unknown sidekey.dev annotations",
            body(&format!(",{}", joined(45_000, |i| format!(r#""sidekey.dev/x{i}":"1""#))), "", ""),
        ),
        ("1,000 references (the most moved), long paths", body("", &refs(1000, 2000), "")),
        ("19,000 references (refused: over the most moved)", body("", &refs(19_000, 100), "")),
        ("one annotation value up to the body limit", body(&format!(r#","big":"{}""#, "x".repeat(3_000_000)), "", "")),
        ("10 Go templates of 256 KiB of distinct calls (refused)", body(&templates(true), "", "")),
        ("10 Go templates of 25 KiB, 20 paths in all (injected)", body(&templates(false), "", "")),
    ];
    let mut report = String::new();
    for (name, b) in &cases {
        assert!(b.len() <= MAX_BODY, "{name}: {} bytes", b.len());
        let before = ALLOC.in_use();
        ALLOC.reset_peak();
        let reply = review(b, &config);
        let peak = ALLOC.peak() - before;
        report.push_str(&format!(
            "{name}: {} KB in, {:?}, {} KB out, heap {:.1} MiB\n",
            b.len() / 1000,
            reply.verdict,
            reply.body.len() / 1000,
            peak as f64 / 1048576.0
        ));
        assert!(peak <= HEAP_BOUND, "{name}: {peak} bytes of heap\n{report}");
    }
    println!("{report}");
}
