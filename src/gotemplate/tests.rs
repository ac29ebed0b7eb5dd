#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

/// Secrets from a map of path → the answer's `Data`.
struct Fixed(Value, Vec<String>);

impl Resolver for Fixed {
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String> {
        self.1.push(path.to_owned());
        if !args.is_empty() {
            return Ok(json!({"Data": {"args": args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()}}));
        }
        self.0
            .get(path)
            .map(|d| json!({"Data": d, "LeaseID": "", "LeaseDuration": 0, "Renewable": false}))
            .ok_or_else(|| "not found".into())
    }

    fn env(&mut self, name: &str) -> String {
        if name == "HOME" { "/home/app".into() } else { String::new() }
    }
}

fn kv2() -> Value {
    json!({
        "secret/data/app": {
            "data": {"password": "s3cr3t", "user": "app"},
            "metadata": {"created_time": "2026-11-29T10:00:00Z", "custom_metadata": null, "deletion_time": "", "destroyed": false, "version": 3}
        },
        "database/creds/app": {"username": "v-app-x", "password": "p-1"}
    })
}

fn render(src: &str) -> Result<String, Error> {
    Template::parse(src)?.render(&Value::Null, &mut Fixed(kv2(), Vec::new()))
}

#[test]
fn the_default_vault_k8s_template_prints_go_maps() {
    let t = "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}";
    assert_eq!(
        render(t).unwrap(),
        "data: map[password:s3cr3t user:app]\nmetadata: map[created_time:2026-11-29T10:00:00Z custom_metadata:<nil> deletion_time: destroyed:false version:3]\n"
    );
    let db =
        "{{ with secret \"database/creds/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}";
    assert_eq!(render(db).unwrap(), "password: p-1\nusername: v-app-x\n");
}

#[test]
fn templates_people_write() {
    let t = r#"
{{- with secret "secret/data/app" -}}
postgresql://{{ .Data.data.user }}:{{ .Data.data.password }}@db:5432/app
{{- end }}"#;
    assert_eq!(render(t).unwrap(), "postgresql://app:s3cr3t@db:5432/app");
    let exports = r#"{{ with secret "secret/data/app" }}{{ range $k, $v := .Data.data }}export {{ $k | toUpper }}="{{ $v }}"
{{ end }}{{ end }}"#;
    assert_eq!(render(exports).unwrap(), "export PASSWORD=\"s3cr3t\"\nexport USER=\"app\"\n");
    assert_eq!(
        render(r#"{{ with secret "secret/data/app" }}{{ .Data.data | toJSON }}{{ end }}"#).unwrap(),
        r#"{"password":"s3cr3t","user":"app"}"#
    );
    assert_eq!(
        render(r#"{{ with secret "secret/data/app" }}{{ .Data.data | toJSONPretty }}{{ end }}"#).unwrap(),
        "{\n  \"password\": \"s3cr3t\",\n  \"user\": \"app\"\n}"
    );
    assert_eq!(
        render(r#"{{ with secret "secret/data/app" }}{{ index .Data.data "password" }}{{ end }}"#).unwrap(),
        "s3cr3t"
    );
    assert_eq!(render(r#"{{ printf "%s-%d-%q" "a" 7 "b" }}"#).unwrap(), "a-7-\"b\"");
    assert_eq!(render(r#"{{ "czNjcjN0" | base64Decode }} {{ "s3cr3t" | base64Encode }}"#).unwrap(), "s3cr3t czNjcjN0");
    assert_eq!(render(r#"{{ env "HOME" }}|{{ env "NOPE" }}"#).unwrap(), "/home/app|");
    assert_eq!(
        render(r#"{{ secret "pki/issue/web" "common_name=a.example" "ttl=1h" }}"#).unwrap(),
        "map[Data:map[args:[common_name=a.example ttl=1h]]]"
    );
}

#[test]
fn conditions_variables_and_else_chains() {
    let t = r#"{{ $v := 3 }}{{ if gt $v 5 }}big{{ else if eq $v 3 }}three{{ else }}small{{ end }}"#;
    assert_eq!(render(t).unwrap(), "three");
    assert_eq!(
        render(r#"{{ with secret "secret/data/app" }}{{ with .Data.data.missing }}x{{ else }}none{{ end }}{{ end }}"#)
            .unwrap(),
        "none"
    );
    assert_eq!(
        render(r#"{{ range $i, $x := split "," "a,b,c" }}{{ $i }}={{ $x }};{{ end }}"#).unwrap(),
        "0=a;1=b;2=c;"
    );
    assert_eq!(render(r#"{{ range split "," "" }}{{ . }}{{ else }}empty{{ end }}"#).unwrap(), "");
    assert_eq!(render(r#"{{ and 1 0 }} {{ or 0 "x" }} {{ not false }} {{ len "abc" }}"#).unwrap(), "0 x true 3");
    assert_eq!(
        render(r#"{{ default "dflt" "" }} {{ "A-b" | lower }} {{ replaceAll "-" "_" "a-b-c" }}"#).unwrap(),
        "dflt a-b a_b_c"
    );
    // A missing key prints as Go prints it.
    assert_eq!(render(r#"{{ with secret "secret/data/app" }}{{ .Data.data.nope }}{{ end }}"#).unwrap(), "<no value>");
    // Comments and custom delimiters.
    assert_eq!(
        Template::parse_with("a[[/* c */]]b[[ print 1 ]]", "[[", "]]")
            .unwrap()
            .render(&Value::Null, &mut Fixed(kv2(), Vec::new()))
            .unwrap(),
        "ab1"
    );
    assert_eq!(render("a {{- /* trimmed */ -}} b").unwrap(), "ab");
}

#[test]
fn the_paths_a_template_reads_are_discovered_by_running_it() {
    let t = Template::parse(r#"{{ with secret "secret/data/app" }}{{ .Data.data.user }}{{ end }}{{ with secret "database/creds/app" }}{{ .Data.username }}{{ end }}"#).unwrap();
    let mut r = Fixed(kv2(), Vec::new());
    t.render(&Value::Null, &mut r).unwrap();
    assert_eq!(r.1, ["secret/data/app", "database/creds/app"]);
}

#[test]
fn errors_name_the_place_and_the_reason() {
    let e = |src: &str| render(src).unwrap_err().to_string();
    assert_eq!(e("a\n{{ if }}"), "template: line 2, column 7: missing value");
    assert_eq!(e("{{ if 1 }}x"), "template: line 1, column 12: {{if}} without {{end}}");
    assert_eq!(e("{{ end }}"), "template: line 1, column 4: {{end}} without a block");
    assert_eq!(e("{{ nosuch 1 }}"), "template: line 1, column 4: function \"nosuch\" not defined");
    assert_eq!(e("{{ \"abc }}"), "template: line 1, column 4: unclosed string");
    assert_eq!(e("{{ define \"x\" }}{{ end }}"), "template: line 1, column 4: {{define}} is not supported");
    assert_eq!(e("{{ $x }}"), "template: undefined variable $x");
    assert_eq!(e(r#"{{ secret "kv/none" }}"#), "template: secret \"kv/none\": not found");
    assert_eq!(e(r#"{{ $s := "s" }}{{ $s.x }}"#), "template: can't evaluate field x in string");
    assert_eq!(e(r#"{{ "s" 1 }}"#), "template: a value can't take arguments (only functions can)");
    assert_eq!(e("{{ index 1 2 }}"), "template: index: can't index number with number");
}

#[test]
fn errors_never_carry_a_value() {
    let secret = "s3cr3t";
    for t in [
        r#"{{ with secret "secret/data/app" }}{{ range .Data.data.password }}{{ end }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ secret "pki/issue/x" .Data.data.password }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ .Data.data.password | base64Decode }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ .Data.data.password.x }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ index .Data.data.password 1 }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ lt .Data.data.password 1 }}{{ end }}"#,
    ] {
        let e = render(t).unwrap_err().to_string();
        assert!(!e.contains(secret), "{e}");
    }
}

#[test]
fn hostile_templates_are_bounded() {
    // Deep nesting.
    let deep = "{{ if 1 }}".repeat(MAX_DEPTH + 1) + &"{{ end }}".repeat(MAX_DEPTH + 1);
    assert!(render(&deep).unwrap_err().to_string().contains("nested deeper"));
    let parens = "{{ print ".to_owned() + &"(".repeat(MAX_DEPTH + 2) + "1" + &")".repeat(MAX_DEPTH + 2) + " }}";
    assert!(render(&parens).unwrap_err().to_string().contains("nested deeper"));
    // Work that multiplies: ranges in ranges.
    let big = format!(
        "{{{{ range $a := {n} }}}}{{{{ range $b := {n} }}}}{{{{ range $c := {n} }}}}x{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}",
        n = 1000
    );
    assert!(render(&big).unwrap_err().to_string().contains("steps"));
    // A count is not a list (found by the fuzzer: `range 1354593149` made
    // a list of that many items first).
    assert!(render("{{ range 1354593149 }}{{ end }}").unwrap_err().to_string().contains("steps"));
    // Output that multiplies.
    let wide = format!("{{{{ $s := \"{}\" }}}}{{{{ range 100000 }}}}{{{{ $s }}}}{{{{ end }}}}", "x".repeat(1000));
    assert!(render(&wide).unwrap_err().to_string().contains("output longer"));
    assert!(Template::parse(&"x".repeat(MAX_TEMPLATE + 1)).is_err());
    // Values that double: bounded before memory is.
    let doubling = "{{ $s := \"xx\" }}{{ range 100 }}{{ $s = print $s $s }}{{ end }}{{ len $s }}";
    assert!(render(doubling).unwrap_err().to_string().contains("longer than"), "{:?}", render(doubling));
}

/// The execution error of `src`, which must parse.
fn exec_error(src: &str) -> String {
    match render(src) {
        Err(Error::Exec(e)) => e,
        Err(e) => panic!("not an execution error: {e}"),
        Ok(out) => panic!("rendered {} bytes", out.len()),
    }
}

/// `$b`: `text` (at most 200 KiB, within the template bound) five times.
fn big(text: &str) -> String {
    format!("{{{{ $s := \"{text}\" }}}}{{{{ $b := print $s $s $s $s $s }}}}")
}

#[test]
fn functions_that_grow_text_or_lists_refuse_before_they_build() {
    // replaceAll "" inserts at every character: 64 Ki × 64 KiB asked for 4 GiB.
    let k64 = "x".repeat(64 * 1024);
    let replace = format!("{{{{ $s := \"{k64}\" }}}}{{{{ replaceAll \"\" $s $s }}}}");
    assert!(exec_error(&replace).contains("replaceAll: a text longer than"));
    assert_eq!(render(r#"{{ replaceAll "" "-" "abc" }}"#).unwrap(), "-a-b-c-", "as Go's strings.ReplaceAll");
    // Many copies of a 1 MB value in one call.
    let mb = big(&"y".repeat(200 * 1024));
    for f in ["print", "println", "printf \"%s%s%s%s%s\"", "printf \"%q%q%q%q%q\""] {
        let t = format!("{mb}{{{{ {f} $b $b $b $b $b }}}}");
        assert!(exec_error(&t).contains("longer than"), "{f}");
    }
    let join = format!("{{{{ $s := \"{}\" }}}}{{{{ $l := split \",\" $s }}}}{{{{ join $s $l }}}}", ",".repeat(100));
    assert!(render(&join).is_ok(), "100 short parts joined by 100 bytes");
    let join = format!("{{{{ $s := \"{}\" }}}}{{{{ $l := split \",\" $s }}}}{{{{ join $s $l }}}}", ",".repeat(40_000));
    assert!(exec_error(&join).contains("longer than"));
    // Lists: counted before they are made; Go's split of "" separates characters.
    assert_eq!(render(r#"{{ range split "" "abc" }}{{ . }};{{ end }}"#).unwrap(), "a;b;c;");
    assert_eq!(render(r#"{{ len (split "" "") }}"#).unwrap(), "0");
    let many = format!("{{{{ len (split \"\" \"{}\") }}}}", "z".repeat(MAX_ITEMS + 1));
    assert!(exec_error(&many).contains("split: more than"));
    // Case changes that grow (ΐ, two bytes, is six in upper case) are bounded too.
    let sharp = format!("{}{{{{ $c := print $b $b }}}}{{{{ upper $c }}}}", big(&"ΐ".repeat(100 * 1024)));
    assert!(exec_error(&sharp).contains("longer than"));
    assert_eq!(render(r#"{{ upper "aß" }} {{ lower "ÀB" }}"#).unwrap(), "ASS àb");
    // JSON of a large value: each '<' is six bytes.
    let json = format!("{}{{{{ toJSON $b }}}}", big(&"<".repeat(200 * 1024)));
    assert!(exec_error(&json).contains("longer than"));
    let base64 = format!("{}{{{{ $c := print $b $b $b $b }}}}{{{{ base64Encode $c }}}}", big(&"q".repeat(200 * 1024)));
    assert!(exec_error(&base64).contains("longer than"));
}

#[test]
fn secret_calls_are_collected_once_each_and_bounded() {
    // The same call many times is one call.
    let same = "{{ with secret \"secret/data/a\" }}{{ end }}".repeat(5_000);
    assert_eq!(Template::parse(&same).unwrap().secret_calls().unwrap().len(), 1);
    let distinct = |n: usize| {
        (0..n).map(|i| format!("{{{{ with secret \"secret/data/p{i}\" }}}}{{{{ end }}}}")).collect::<String>()
    };
    assert_eq!(Template::parse(&distinct(MAX_CALLS)).unwrap().secret_calls().unwrap().len(), MAX_CALLS);
    let e = Template::parse(&distinct(MAX_CALLS + 1)).unwrap().secret_calls().unwrap_err().to_string();
    assert!(e.contains("more than 100 distinct secret calls"), "{e}");
}

#[test]
fn the_function_table_is_sorted() {
    assert!(funcs::BUILTINS.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn secret_calls_are_found_without_running_the_template() {
    let t = Template::parse(
        r#"{{ with secret "database/creds/app" }}{{ .Data.username }}{{ end }}
{{- if true }}{{ (secret "secret/data/a").Data.data.x }}{{ end }}
{{- range $k, $v := (secret "secret/data/a").Data.data }}{{ $k }}{{ end }}
{{- with secret "pki/issue/web" "common_name=web.example" "ttl=24h" }}{{ .Data.certificate }}{{ end }}"#,
    )
    .unwrap();
    let calls = t.secret_calls().unwrap();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["database/creds/app", "secret/data/a", "pki/issue/web"]);
    assert_eq!(calls[2].args, [("common_name".into(), "web.example".into()), ("ttl".into(), "24h".into())]);
    assert!(Template::parse("no secrets").unwrap().secret_calls().unwrap().is_empty());
}

#[test]
fn a_secret_path_that_is_computed_is_refused_by_name() {
    for t in [
        r#"{{ with secret (printf "secret/data/%s" "x") }}{{ end }}"#,
        r#"{{ $p := "a" }}{{ with secret $p }}{{ end }}"#,
        r#"{{ "a" | secret }}"#,
        r#"{{ with secret "pki/issue/x" (env "CN") }}{{ end }}"#,
    ] {
        let e = Template::parse(t).unwrap().secret_calls().unwrap_err().to_string();
        assert!(e.contains("literal strings"), "{t}: {e}");
    }
    let e = Template::parse(r#"{{ with secret "pki/issue/x" "cn" }}{{ end }}"#).unwrap().secret_calls().unwrap_err();
    assert!(e.to_string().contains("argument 2 is not k=v"), "{e}");
}

#[test]
fn missing_key_error_fails_on_a_field_the_map_lacks_as_go_does() {
    struct R;
    impl Resolver for R {
        fn secret(&mut self, _: &str, _: &[(String, String)]) -> Result<Value, String> {
            Ok(serde_json::json!({"Data": {"user": "app"}}))
        }
    }
    let t = Template::parse(r#"{{ with secret "a" }}{{ .Data.user }} {{ .Data.pass }}{{ end }}"#).unwrap();
    assert_eq!(t.render(&Value::Null, &mut R).unwrap(), "app <no value>");
    let e = t.render_with(&Value::Null, &mut R, true).unwrap_err().to_string();
    assert!(e.contains("map has no entry for key \"pass\""), "{e}");
    let present = Template::parse(r#"{{ with secret "a" }}{{ .Data.user }}{{ end }}"#).unwrap();
    assert_eq!(present.render_with(&Value::Null, &mut R, true).unwrap(), "app");
}
