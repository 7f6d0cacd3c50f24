//! The command line against the real control plane: `roster import` output applied with
//! `kubectl apply --dry-run=server` (thousands of CSV rows with a BOM, CRLF, quoted commas
//! and UTF-8 names; a Keycloak export), the local admission rules compared with the API
//! server's verdicts on generated Users, and the admin commands — run as a kubectl plugin
//! too — beside the selectable fields, `roster stat` and the phase gauges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use kube::CustomResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use libtest_mimic::Trial;
use roster::api::admission::Admission;
use roster::api::{MfaReset, PasswordReset, User, UserInvite};
use serde_json::{Value, json};

use crate::harness::{Ns, Ran, poll_until, run_program, shared, trial, wait_for};
use crate::lifecycle::{email, enrolled, phase, user_manifest};
use crate::portal::{link_token, linked_user};
use crate::seeded::Rng;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("cli::import_round_trips_through_the_api_server", import_round_trips),
        trial("cli::local_admission_agrees_with_the_api_server", admission_agrees),
        trial("cli::admin_commands_write_what_kubectl_would", admin_commands),
    ]
}

/// Runs `program` with `args` against the shared control plane (`PATH` extended by `path`).
fn run(program: &Path, args: &[&str], path: Option<&Path>, stdin: Option<&str>) -> anyhow::Result<Ran> {
    let mut env =
        vec![("KUBECONFIG", shared().kubeconfig.clone().into_os_string()), ("NO_COLOR", "1".into())];
    if let Some(dir) = path {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_owned()];
        paths.extend(std::env::split_paths(&inherited));
        env.push(("PATH", std::env::join_paths(paths)?));
    }
    run_program(program, args, &env, stdin)
}

fn roster(args: &[&str]) -> anyhow::Result<Ran> {
    run(Path::new(env!("CARGO_BIN_EXE_roster")), args, None, None)
}

/// `roster args…`, which must succeed.
fn roster_ok(args: &[&str]) -> anyhow::Result<Ran> {
    let ran = roster(args)?;
    ensure!(ran.ok(), "roster {} failed:\n{}", args.join(" "), ran.stderr);
    Ok(ran)
}

/// `roster args…`, which must fail saying `expected`.
fn roster_refused(args: &[&str], expected: &str) -> anyhow::Result<()> {
    let ran = roster(args)?;
    ensure!(!ran.ok(), "roster {} succeeded:\n{}", args.join(" "), ran.stdout);
    ensure!(
        ran.stderr.contains(expected),
        "roster {}: {:?} not in\n{}",
        args.join(" "),
        expected,
        ran.stderr
    );
    Ok(())
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<Ran> {
    let ran = run(Path::new("kubectl"), args, None, stdin)?;
    ensure!(ran.ok(), "kubectl {} failed:\n{}", args.join(" "), ran.stderr);
    Ok(ran)
}

/// How many objects `kubectl apply --dry-run=server` says it would create.
fn dry_run_created(applied: &Ran) -> usize {
    applied.stdout.lines().filter(|line| line.ends_with("created (server dry run)")).count()
}

fn work_dir(ns: &Ns, what: &str) -> anyhow::Result<PathBuf> {
    let dir = shared().work_dir.join("cli").join(format!("{}-{what}", ns.name));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A CSV row of the generated file: UTF-8 names, a quoted comma and quotes, groups.
fn row(i: usize, ns: &Ns) -> String {
    let given = ["Jürgen", "Zoë", "李", "Ólafur", "Nnamdi"][i % 5];
    let locale = ["de", "en", "pt-BR", "zh-Hant-TW", "is"][i % 5];
    format!(
        "imp{i}@{ns}.example.com,imp-{i},{given},\"Doe, {i}\",\"{given} \"\"the {i}th\"\"\",+1555{i:07},{locale},Europe/Berlin,sre;team-{};,{}\r\n",
        i % 7,
        1000 + i % 13,
        ns = ns.name
    )
}

const HEADER: &str = "\u{feff}Email,Username,First Name,Last Name,Display Name,Mobile Phone,Locale,Timezone,Groups,Cost-Center\r\n";

async fn import_round_trips(ns: Ns) -> anyhow::Result<()> {
    let rows: usize = std::env::var("ROSTER_IMPORT_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let dir = work_dir(&ns, "import")?;
    let file = dir.join("people.csv");
    let mut csv = String::from(HEADER);
    for i in 0..rows {
        csv.push_str(&row(i, &ns));
    }
    std::fs::write(&file, &csv)?;
    let out = dir.join("users");
    let (file_arg, out_arg) = (file.display().to_string(), out.display().to_string());

    // Every row valid: a file per User and a kustomization, which the API server takes whole.
    let started = std::time::Instant::now();
    let ran = roster_ok(&["import", &file_arg, "-o", &out_arg, "-n", &ns.name])?;
    println!("imported {rows} rows in {:?}: {}", started.elapsed(), ran.stderr.trim());
    ensure!(std::fs::read_dir(&out)?.count() == rows + 1, "one file per User and the kustomization");
    let jane: User = serde_norway::from_str(&std::fs::read_to_string(out.join("imp-3.yaml"))?)?;
    ensure!(jane.spec.given_name.as_deref() == Some("Ólafur"), "UTF-8 name: {:?}", jane.spec);
    ensure!(jane.spec.family_name.as_deref() == Some("Doe, 3"), "quoted comma: {:?}", jane.spec);
    ensure!(
        jane.spec.display_name.as_deref() == Some("Ólafur \"the 3th\""),
        "quoted quotes: {:?}",
        jane.spec
    );
    ensure!(jane.spec.groups == ["sre", "team-3"], "groups: {:?}", jane.spec.groups);
    ensure!(jane.spec.attributes.get("Cost-Center").map(String::as_str) == Some("1003"), "attribute");
    ensure!(jane.spec.email == format!("imp3@{}.example.com", ns.name), "the BOM is not in the first header");
    let started = std::time::Instant::now();
    let applied = kubectl(&["apply", "--dry-run=server", "-k", &out_arg], None)?;
    ensure!(
        dry_run_created(&applied) == rows,
        "kubectl apply -k created {} of {rows}",
        dry_run_created(&applied)
    );
    println!("kubectl apply --dry-run=server -k: {rows} Users in {:?}", started.elapsed());

    // The same directory again: nothing overwritten unless asked.
    roster_refused(&["import", &file_arg, "-o", &out_arg], "--overwrite")?;

    // Broken rows: named with their row, field and rule, and nothing written.
    let mut broken = String::from(HEADER);
    for i in 0..50 {
        broken.push_str(&row(i, &ns));
    }
    broken.push_str(&format!("IMP3@{}.example.com,imp-dup,A,B,C,,,,,\r\n", ns.name));
    broken.push_str(&format!("bad-phone@{}.example.com,bad-phone,A,B,C,555-1234,,,,\r\n", ns.name));
    broken.push_str(",no-email,A,B,C,,,,,\r\n");
    let broken_file = dir.join("broken.csv");
    std::fs::write(&broken_file, &broken)?;
    let broken_arg = broken_file.display().to_string();
    let refused_dir = dir.join("refused").display().to_string();
    let ran = roster(&["import", &broken_arg, "-o", &refused_dir])?;
    ensure!(!ran.ok(), "a file with broken rows was imported");
    for expected in [
        "row 52: spec.email \"imp3@",
        "is also on row 5",
        "row 53: spec.phone: must be an E.164 phone number",
        "(rule: self.matches('^[+][1-9][0-9]{1,14}$'))",
        "row 54: spec.email: is required",
        "3 of 53 rows refused: nothing written",
    ] {
        ensure!(ran.stderr.contains(expected), "{expected:?} not in\n{}", ran.stderr);
    }
    ensure!(!Path::new(&refused_dir).exists(), "something was written");
    // A header that cannot name an attribute is refused once, for the file.
    let bad_header = dir.join("bad-header.csv");
    std::fs::write(&bad_header, format!("email,Cost Center\n{},1\n", email("hdr", &ns)))?;
    let expected = "the columns \"Cost Center\" would become attributes: attribute names must be";
    roster_refused(&["import", &bad_header.display().to_string(), "-o", &refused_dir], expected)?;
    ensure!(!Path::new(&refused_dir).exists(), "something was written");
    // --skip-invalid writes the valid rows, here as one stream that the API server takes.
    let ran = roster_ok(&["import", &broken_arg, "-o", "-", "-n", &ns.name, "--skip-invalid"])?;
    ensure!(ran.stderr.contains("skipped 3 invalid rows"), "{}", ran.stderr);
    let applied = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&ran.stdout))?;
    ensure!(dry_run_created(&applied) == 50, "the stream's valid rows: {}", applied.stdout);

    // A Keycloak realm export: people without their credentials, service accounts left out.
    let realm = json!({"realm": "corp", "users": [
        {"username": "kc-jane", "email": email("kc-jane", &ns), "firstName": "Jane", "enabled": true,
         "attributes": {"phoneNumber": ["+15551234567"], "department": ["SRE"]}, "groups": ["/engineering/sre"],
         "credentials": [{"type": "password", "secretData": "{\"value\":\"keycloak-hash-marker\"}"}]},
        {"username": "kc-bob", "email": email("kc-bob", &ns), "enabled": false},
        {"username": "service-account-argo", "serviceAccountClientId": "argo"},
    ]});
    let realm_file = dir.join("realm.json");
    std::fs::write(&realm_file, realm.to_string())?;
    let ran = roster_ok(&["import", &realm_file.display().to_string(), "-o", "-", "-n", &ns.name])?;
    ensure!(!ran.stdout.contains("marker") && !ran.stdout.contains("credential"), "{}", ran.stdout);
    ensure!(ran.stderr.contains("left out 1 service-account users"), "{}", ran.stderr);
    let applied = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&ran.stdout))?;
    ensure!(dry_run_created(&applied) == 2, "{}", applied.stdout);

    // The README's examples import and apply as they are.
    for (example, people) in [("examples/import/people.csv", 3), ("examples/import/realm.json", 2)] {
        let path = crate::harness::repo_path(example).display().to_string();
        let ran = roster_ok(&["import", &path, "-o", "-", "-n", &ns.name])?;
        let applied = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&ran.stdout))?;
        ensure!(dry_run_created(&applied) == people, "{example}: {}", applied.stdout);
    }

    // --against-cluster: an address another User holds is refused; the same User again is not.
    // Usernames are unique in the whole directory: these carry the namespace.
    let (held, taker) = (format!("held-{}", ns.name), format!("taker-{}", ns.name));
    let spec = json!({"email": email("held", &ns), "username": held, "invite": {"policy": "Manual"}});
    ns.apply(user_manifest("held", spec, json!({}))).await?;
    let against = dir.join("against.csv");
    std::fs::write(
        &against,
        format!(
            "email,username,metadata.name\n{},{held},held\n{},{taker},taker\n{},{taker}-2,held\n",
            email("held", &ns),
            email("HELD", &ns),
            email("attacker", &ns)
        ),
    )?;
    // Without -n: the rows land in the current namespace, the one the kubeconfig names.
    let mut config: Value = serde_norway::from_str(&std::fs::read_to_string(&shared().kubeconfig)?)?;
    if let Some(contexts) = config["contexts"].as_array_mut() {
        for context in contexts {
            context["context"]["namespace"] = json!(ns.name);
        }
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_json::to_string(&config)?)?;
    let kubeconfig = kubeconfig.display().to_string();
    let against = against.display().to_string();
    let ran = roster(&["import", &against, "-o", "-", "--kubeconfig", &kubeconfig, "--against-cluster"])?;
    ensure!(!ran.ok(), "a held address was imported");
    let holder = format!("already held by User {}/held", ns.name);
    ensure!(ran.stderr.contains("row 3: spec.email") && ran.stderr.contains(&holder), "{}", ran.stderr);
    ensure!(
        !ran.stderr.lines().any(|line| line.starts_with("row 2:")),
        "importing the same User again is no conflict:\n{}",
        ran.stderr
    );
    let overwritten = format!("row 4: User {}/held already exists as", ns.name);
    ensure!(
        ran.stderr.contains(&overwritten),
        "a row naming an existing User with another email:\n{}",
        ran.stderr
    );
    Ok(())
}

/// A value for one field: mostly sound, sometimes wrong in one of the ways people are.
fn pick(rng: &mut Rng, sound: &[&str], wrong: &[&str]) -> String {
    if rng.one_in(12) { rng.pick(wrong).to_string() } else { rng.pick(sound).to_string() }
}

/// A generated User: each field present or not, sound or not.
fn generated(rng: &mut Rng, i: usize, ns: &Ns) -> Value {
    let mut spec = serde_json::Map::new();
    let long_local = format!("{}@example.com", "x".repeat(65));
    let email = pick(
        rng,
        &[&format!("gen{i}@{}.example.com", ns.name), "ünï@example.com"],
        &["no-at-sign", "a@b", "a b@example.com", &long_local, "x@-bad.example.com"],
    );
    spec.insert("email".into(), email.into());
    let mut maybe = |field: &str, sound: &[&str], wrong: &[&str], rng: &mut Rng| {
        if rng.one_in(2) {
            spec.insert(field.into(), pick(rng, sound, wrong).into());
        }
    };
    let ok_name = "é".repeat(128);
    let long_name = "é".repeat(129);
    maybe("username", &["jane", "j.doe@corp", "A_b-9"], &["-jane", "jane doe", "jané", ""], rng);
    maybe("givenName", &["Jürgen", &ok_name, "李"], &[&long_name], rng);
    maybe(
        "phone",
        &["+15551234567", "+4930123456"],
        &["5551234567", "+0123", "+1 555 123", "+1234567890123456"],
        rng,
    );
    maybe("locale", &["en", "pt-BR", "zh-Hant-TW"], &["english", "e", "en_US", "en-"], rng);
    maybe(
        "timezone",
        &["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires"],
        &["Europe/ Berlin", "/UTC", "Etc//GMT"],
        rng,
    );
    maybe("state", &["Active", "Inactive"], &["active", "Paused"], rng);
    maybe("expiresAt", &["2030-01-01T00:00:00Z"], &["tomorrow", "2030-13-01T00:00:00Z"], rng);
    if rng.one_in(2) {
        let groups: Value = match rng.below(10) {
            0 => json!(["sre", "sre"]),
            1 => json!([""]),
            2 => json!(["x".repeat(129)]),
            _ => json!(["sre", "admins"]),
        };
        spec.insert("groups".into(), groups);
    }
    if rng.one_in(2) {
        let attributes: Value = match rng.below(10) {
            0 => json!({"Cost Center": "1"}),
            1 => json!({"-x": "1"}),
            2 => json!({"orgUnit": "x".repeat(1025)}),
            _ => json!({"orgUnit": "Platform", "cost-center.id": "4711"}),
        };
        spec.insert("attributes".into(), attributes);
    }
    if rng.one_in(20) {
        spec.insert("colour".into(), "blue".into());
    }
    let name = match rng.below(20) {
        0 => "Upper".to_owned(),
        1 => format!("g{i}-{}", "n".repeat(60)),
        2 => "under_score".to_owned(),
        _ => format!("gen-{i}"),
    };
    user_manifest(&name, Value::Object(spec), json!({}))
}

async fn admission_agrees(ns: Ns) -> anyhow::Result<()> {
    let count: usize =
        std::env::var("ROSTER_ADMISSION_USERS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let (mut rng, _) = Rng::seeded("ADMISSION", "generated Users");
    let admission = Admission::of(&User::crd())?;
    let api = ns.raw::<User>();
    // Strict field validation, as kubectl and Argo CD send it: unknown fields are refused.
    let dry_run = PatchParams {
        dry_run: true,
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..PatchParams::apply("e2e")
    };
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..count {
        let manifest = generated(&mut rng, i, &ns);
        let local = admission.check(&manifest);
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let server = api.patch(&name, &dry_run, &Patch::Apply(&manifest)).await;
        match (&server, local.is_empty()) {
            (Ok(_), true) => admitted += 1,
            (Err(kube::Error::Api(status)), false) if matches!(status.code, 400 | 422) => refused += 1,
            // Server-side apply refuses what its typed patch cannot hold (an unknown field, a
            // set list's duplicates) with a 500 of its own.
            (Err(kube::Error::Api(status)), false)
                if status.code == 500
                    && status.message.contains("failed to create typed patch object")
                    && local.iter().any(|v| status.message.contains(&format!(".{}:", v.field))) =>
            {
                refused += 1
            }
            (Ok(_), false) => {
                anyhow::bail!("the API server admitted what roster refuses: {local:?}\n{manifest:#}")
            }
            (Err(e), _) => {
                anyhow::bail!("roster admits ({local:?}) what the API server refuses: {e}\n{manifest:#}")
            }
        }
    }
    println!("{count} generated Users: {admitted} admitted and {refused} refused by both");
    ensure!(admitted > count / 10 && refused > count / 10, "the generator should give both verdicts");
    Ok(())
}

/// The Users of `ns` by phase, as listed, and as `roster stat` and the gauges count them.
async fn counted(
    ns: &Ns,
) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let mut listed = BTreeMap::new();
    for user in ns.raw::<User>().list(&ListParams::default()).await? {
        let phase = match phase(&user) {
            "" => "NEW",
            other => other,
        };
        *listed.entry(phase.to_owned()).or_default() += 1;
    }
    let stat = roster_ok(&["stat", "-n", &ns.name])?.stdout;
    let mut lines = stat.lines().skip_while(|line| *line != "USERS").skip(1);
    let header: Vec<String> =
        lines.next().context("no header")?.split_whitespace().map(str::to_owned).collect();
    let row: Vec<String> = lines.next().context("no row")?.split_whitespace().map(str::to_owned).collect();
    ensure!(row.first() == Some(&ns.name), "stat's row: {row:?}\n{stat}");
    let stated: BTreeMap<String, u64> = header[1..header.len() - 1]
        .iter()
        .zip(&row[1..])
        .filter_map(|(phase, n)| Some((phase.clone(), n.parse().ok()?)).filter(|(_, n)| *n > 0))
        .collect();
    let metrics = reqwest::get(format!("{}/metrics", shared().operator_url)).await?.text().await?;
    let prefix = format!("roster_users{{namespace=\"{}\",phase=\"", ns.name);
    let gauged = metrics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (phase, value) = rest.split_once("\"} ")?;
            Some((phase.to_owned(), value.parse().ok()?))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok((listed, stated, gauged))
}

async fn admin_commands(ns: Ns) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let users = ns.raw::<User>();
    let first_token = linked_user(&ns, "cli-pending", json!({})).await?;
    let active_email = enrolled(&ns, "cli-active", json!({"mfa": {"required": false}}), None).await?;
    // Usernames are unique in the whole directory: this one carries the namespace.
    let off_username = format!("off-{n}");
    let off = json!({"email": email("cli-off", &ns), "username": off_username, "state": "Inactive", "invite": {"policy": "Manual"}});
    ns.apply(user_manifest("cli-off", off, json!({}))).await?;
    wait_for(&users, "cli-off", "INACTIVE", |u| phase(u) == "INACTIVE").await?;

    // kubectl filters by the selectable fields, on the API server.
    let names = |ran: Ran| ran.stdout.lines().map(str::to_owned).collect::<Vec<_>>();
    for (selector, expected) in [
        ("status.phase=PENDING".to_owned(), "cli-pending"),
        ("status.phase=INACTIVE".to_owned(), "cli-off"),
        (format!("spec.email={active_email}"), "cli-active"),
        (format!("spec.username={off_username}"), "cli-off"),
    ] {
        let ran = kubectl(&["get", "users", "-n", n, "--field-selector", &selector, "-o", "name"], None)?;
        ensure!(names(ran) == [format!("user.roster.dev/{expected}")], "--field-selector {selector}");
    }
    let wide = kubectl(&["get", "users", "-n", n, "-o", "wide"], None)?.stdout;
    let header = wide.lines().next().unwrap_or_default();
    ensure!(header.contains("LAST-SIGN-IN") && header.contains("EXPIRES"), "{header}");

    // As a kubectl plugin.
    let bin = work_dir(&ns, "bin")?;
    let plugin = bin.join("kubectl-roster");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_roster"), &plugin)?;
    let listed =
        run(Path::new("kubectl"), &["roster", "list", "--phase", "pending", "-n", n], Some(&bin), None)?;
    ensure!(listed.ok(), "kubectl roster list: {}", listed.stderr);
    ensure!(
        listed.stdout.contains("cli-pending") && !listed.stdout.contains("cli-active"),
        "{}",
        listed.stdout
    );
    let help = run(Path::new("kubectl"), &["roster", "--help"], Some(&bin), None)?;
    ensure!(help.stdout.contains("Usage: kubectl roster"), "{}", help.stdout);
    roster_refused(&["list", "--phase", "bogus", "-n", n], "must be one of NEW, PENDING, ACTIVE, INACTIVE")?;
    let searched = roster_ok(&["list", "--search", &off_username.to_uppercase(), "-n", n])?.stdout;
    ensure!(searched.lines().count() == 2 && searched.contains("cli-off"), "--search: {searched}");

    // link prints the invite's link; resend replaces it.
    let linked = roster_ok(&["link", "cli-pending", "-n", n])?.stdout;
    ensure!(
        linked.starts_with("userinvite/cli-pending-invite: ") && linked.contains(&first_token),
        "{linked}"
    );
    let resent = roster_ok(&["resend", "cli-pending", "-n", n])?.stdout;
    ensure!(
        resent.contains("userinvite.roster.dev/cli-pending-invite patched: spec.resend 0 → 1"),
        "{resent}"
    );
    let invites = ns.api::<UserInvite>();
    ensure!(invites.get("cli-pending-invite").await?.spec.resend == 1, "spec.resend");
    poll_until("a new link after the resend", || async {
        Ok(link_token(&ns, "cli-pending-invite").await.is_ok_and(|token| token != first_token))
    })
    .await?;
    let second = link_token(&ns, "cli-pending-invite").await?;
    // roster writes the link, then the status that says which issuance it is: until then
    // `link` says to run again.
    poll_until("roster link prints the new link", || async {
        Ok(roster(&["link", "cli-pending", "-n", n])?.stdout.contains(&second))
    })
    .await?;
    roster_refused(
        &["resend", "cli-active", "-n", n],
        "cli-active is ACTIVE: an onboarded person gets no invite",
    )?;
    // A Manual User without an invite gets one, and only one however often it is asked.
    let manual = json!({"email": email("cli-manual", &ns), "invite": {"policy": "Manual"}});
    ns.apply(user_manifest("cli-manual", manual, json!({}))).await?;
    wait_for(&users, "cli-manual", "reconciled", crate::harness::is_reconciled).await?;
    let first = roster_ok(&["resend", "cli-manual", "-n", n])?.stdout;
    ensure!(first.contains("userinvite.roster.dev/cli-manual-invite created"), "{first}");
    let _ = roster(&["resend", "cli-manual", "-n", n])?;
    let selector = "spec.userRef.name=cli-manual";
    let of_manual =
        kubectl(&["get", "userinvites", "-n", n, "--field-selector", selector, "-o", "name"], None)?;
    ensure!(of_manual.stdout.lines().count() == 1, "invites of cli-manual: {}", of_manual.stdout);
    roster_refused(&["resend", "nobody", "-n", n], &format!("no User \"nobody\" in namespace {n}"))?;

    // Resets: what kubectl would create, with the reason, by the plugin's field manager.
    let created = roster_ok(&[
        "reset-password",
        "cli-active",
        "--reason",
        "ticket 4711",
        "--delivery",
        "link",
        "-n",
        n,
    ])?;
    let reset_name = created
        .stdout
        .strip_prefix("passwordreset.roster.dev/")
        .and_then(|rest| rest.split_once(" created"))
        .map(|(name, _)| name.to_owned())
        .with_context(|| created.stdout.clone())?;
    let reset = ns.api::<PasswordReset>().get(&reset_name).await?;
    ensure!(
        reset.spec.reason == "ticket 4711" && reset.spec.user_ref.name == "cli-active",
        "{:?}",
        reset.spec
    );
    let managers: Vec<_> =
        reset.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    ensure!(managers.contains(&"kubectl-roster".to_owned()), "{managers:?}");
    poll_until("the reset's link", || async {
        Ok(roster(&["link", "cli-active", "-n", n])?
            .stdout
            .contains(&format!("passwordreset/{reset_name}: http")))
    })
    .await?;
    let created = roster_ok(&["reset-mfa", "cli-active", "--reason", "lost phone", "-n", n])?.stdout;
    ensure!(created.starts_with("mfareset.roster.dev/cli-active-mfa-"), "{created}");
    let resets = ns.api::<MfaReset>().list(&ListParams::default()).await?;
    ensure!(resets.items.iter().any(|r| r.spec.reason == "lost phone"), "no MfaReset");
    roster_refused(&["reset-mfa", "cli-active", "-n", n], "--reason")?;
    let selected = kubectl(
        &["get", "mfaresets", "-n", n, "--field-selector", "spec.userRef.name=cli-active", "-o", "name"],
        None,
    )?;
    ensure!(selected.stdout.lines().count() == 1, "mfaresets of cli-active: {}", selected.stdout);
    let none = kubectl(
        &["get", "mfaresets", "-n", n, "--field-selector", "spec.userRef.name=cli-off", "-o", "name"],
        None,
    )?;
    ensure!(none.stdout.trim().is_empty(), "mfaresets of cli-off: {}", none.stdout);

    // deactivate / activate set spec.state.
    roster_ok(&["deactivate", "cli-pending", "-n", n])?;
    wait_for(&users, "cli-pending", "INACTIVE", |u| phase(u) == "INACTIVE").await?;
    ensure!(roster_ok(&["deactivate", "cli-pending", "-n", n])?.stdout.contains("unchanged"), "twice");
    roster_ok(&["activate", "cli-pending", "-n", n])?;
    wait_for(&users, "cli-pending", "not INACTIVE", |u| {
        u.data["spec"]["state"] == "Active" && phase(u) != "INACTIVE"
    })
    .await?;

    // `roster stat` and the gauges count what a list shows.
    let agreed = poll_until("stat and the gauges agree with a list", || async {
        let (listed, stated, gauged) = counted(&ns).await?;
        Ok(listed == stated && listed == gauged && listed.values().sum::<u64>() == 4)
    })
    .await;
    let (listed, stated, gauged) = counted(&ns).await?;
    ensure!(agreed.is_ok(), "listed {listed:?}, roster stat {stated:?}, gauges {gauged:?}");
    println!("Users of {n} by phase: {listed:?}");
    Ok(())
}
