//! The documentation is checked like code: every relative link and anchor in
//! README.md and docs/ resolves, every `finch-webhooks` and `finch-emulator`
//! command shown in a code block (run directly, by `cargo run` or by
//! `docker compose run`) parses with the real command line, every script it runs
//! exists, and every setting it names exists in the configuration (and
//! docs/configuration.md lists them all).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser as _;
use finch_webhooks::cli::Cli;
use finch_webhooks::config::{Settings, DEFAULTS};

/// Upper-case names the docs use that are not settings of ours: other
/// programs' environment variables, and RabbitMQ's error codes.
const OTHER_NAMES: &[&str] = &[
    "PRECONDITION_FAILED",
    "FINCH_WEBHOOKS_CONFIG",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
    // The official SDK's variable for its base URL.
    "FINCH_BASE_URL",
    // deploy/send-test-webhook.sh and deploy/validate.sh.
    "DRY_RUN",
    "OPS_VENV",
    // The Dockerfile's build argument.
    "RUST_VERSION",
    // The Kubernetes Secret's key for the migrate Job's schema-owner URL.
    "MIGRATE_DATABASE_URL",
    // The `fail` crate's variable (development builds only).
    "FAILPOINTS",
];

/// Families the docs name with a wildcard (`OTEL_*`) that are not ours.
const OTHER_PREFIXES: &[&str] = &["OTEL_"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every markdown file under docs/, as (path, text).
fn documents() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    let mut paths = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a doc is readable");
            (path, text)
        })
        .collect()
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A markdown file split into what the checks read.
#[derive(Default)]
struct Parsed {
    /// Anchors of the headings, as GitHub makes them.
    anchors: BTreeSet<String>,
    /// Targets of inline links outside code, with their line numbers.
    links: Vec<(usize, String)>,
    /// Shell code blocks: (line of the opening fence, lines).
    shell_blocks: Vec<(usize, Vec<String>)>,
    /// Inline code spans outside code blocks.
    inline_code: Vec<(usize, String)>,
}

fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut slugs_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fence: Option<(usize, bool, Vec<String>)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            match fence.take() {
                Some((start, shell, lines)) => {
                    if shell {
                        parsed.shell_blocks.push((start, lines));
                    }
                }
                None => {
                    let language = trimmed.trim_start_matches('`').trim();
                    let shell = matches!(language, "" | "sh" | "bash" | "shell" | "console");
                    fence = Some((number, shell, Vec::new()));
                }
            }
            continue;
        }
        if let Some((_, _, lines)) = fence.as_mut() {
            lines.push(line.to_owned());
            continue;
        }
        let (code, prose) = split_inline_code(line);
        parsed
            .inline_code
            .extend(code.into_iter().map(|span| (number, span)));
        if let Some(title) = heading(line) {
            let slug = slug(&title);
            let count = slugs_seen.entry(slug.clone()).or_insert(0);
            let anchor = if *count == 0 {
                slug
            } else {
                format!("{slug}-{count}")
            };
            *count += 1;
            parsed.anchors.insert(anchor);
        }
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            parsed.links.push((number, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    assert!(fence.is_none(), "a code fence is never closed");
    parsed
}

/// `# Title`: the title, with the text of inline code and links kept.
fn heading(line: &str) -> Option<String> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
        return None;
    }
    let mut title = line[hashes..].trim().replace('`', "");
    // [text](target) reads as its text.
    while let (Some(open), Some(middle)) = (title.find('['), title.find("](")) {
        let Some(close) = title[middle..].find(')') else {
            break;
        };
        let text = title[open + 1..middle].to_owned();
        title.replace_range(open..middle + close + 1, &text);
    }
    Some(title)
}

/// GitHub's heading anchors: lower case, punctuation other than `-` and `_`
/// dropped, spaces turned into hyphens.
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The line's inline code spans, and the line with them blanked out.
fn split_inline_code(line: &str) -> (Vec<String>, String) {
    let mut spans = Vec::new();
    let mut prose = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        prose.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('`') {
            Some(end) => {
                spans.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => {
                rest = after;
            }
        }
    }
    prose.push_str(rest);
    (spans, prose)
}

fn parsed_documents() -> Vec<(PathBuf, Parsed)> {
    documents()
        .into_iter()
        .map(|(path, text)| {
            let parsed = parse(&text);
            (path, parsed)
        })
        .collect()
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let documents = parsed_documents();
    let anchors: BTreeMap<PathBuf, &BTreeSet<String>> = documents
        .iter()
        .map(|(path, parsed)| (path.clone(), &parsed.anchors))
        .collect();
    let mut checked = 0;
    let mut broken = Vec::new();
    for (path, parsed) in &documents {
        for (line, link) in &parsed.links {
            let target = link.split_whitespace().next().unwrap_or("");
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target, None),
            };
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                path.parent().expect("a doc has a folder").join(file)
            };
            let resolved = match resolved.canonicalize() {
                Ok(resolved) => resolved,
                Err(_) => {
                    broken.push(format!("{}:{line}: {link}: no such file", shown(path)));
                    continue;
                }
            };
            if let Some(anchor) = anchor {
                match anchors.get(&resolved) {
                    Some(known) if known.contains(anchor) => {}
                    Some(_) => broken.push(format!(
                        "{}:{line}: {link}: no heading with that anchor",
                        shown(path)
                    )),
                    None => broken.push(format!(
                        "{}:{line}: {link}: an anchor into a file that is not a checked doc",
                        shown(path)
                    )),
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // README and docs link to each other far more than this; fewer means
    // the scan stopped finding links.
    assert!(checked >= 30, "only {checked} relative links found");
}

/// One shell command line of a code block: comments dropped, continuation
/// lines joined, split into words and then at `|`, `;`, `&&`, `||` and `&`.
fn commands(block: &[String]) -> Vec<Vec<String>> {
    let joined = block.join("\n").replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let Some(words) = shlex::split(line) else {
            continue;
        };
        let mut command = Vec::new();
        for word in words {
            if matches!(word.as_str(), "|" | ";" | "&&" | "||" | "&") {
                found.push(std::mem::take(&mut command));
            } else {
                command.push(word);
            }
        }
        found.push(command);
    }
    found.retain(|command| !command.is_empty());
    found
}

/// The two programs whose command lines the docs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Service,
    Emulator,
}

/// The program a `cargo run` runs: the package or binary it names.
fn cargo_runs(words: &[&str]) -> Option<Program> {
    let cargo_args = words.split(|word| *word == "--").next().unwrap_or_default();
    let named = cargo_args
        .windows(2)
        .find(|pair| matches!(pair[0], "-p" | "--package" | "--bin"))
        .map(|pair| pair[1]);
    match named {
        None | Some("finch-webhooks") => Some(Program::Service),
        Some("finch-emulator") => Some(Program::Emulator),
        Some(_) => None,
    }
}

/// The program and its arguments, for the ways the docs run one: directly,
/// through `cargo run`, or in a compose service (`docker compose run`).
fn invocation<'a>(words: &'a [&'a str]) -> Option<(Program, &'a [&'a str])> {
    let program = *words.first()?;
    if program == "finch-webhooks" || program.ends_with("/finch-webhooks") {
        return Some((Program::Service, &words[1..]));
    }
    if program == "finch-emulator" || program.ends_with("/finch-emulator") {
        return Some((Program::Emulator, &words[1..]));
    }
    if program == "cargo" && words.get(1) == Some(&"run") {
        let dash = words.iter().position(|word| *word == "--");
        let arguments = dash.map_or(&[][..], |dash| &words[dash + 1..]);
        return cargo_runs(words).map(|which| (which, arguments));
    }
    if program == "docker" && words.get(1) == Some(&"compose") {
        let run = words.iter().position(|word| *word == "run")?;
        let mut rest = &words[run + 1..];
        while let Some(flag) = rest.first().filter(|word| word.starts_with('-')) {
            rest = &rest[1..];
            if matches!(*flag, "-e" | "--env" | "--entrypoint" | "-w" | "--workdir") {
                rest = rest.get(1..).unwrap_or_default();
            }
        }
        let (service, arguments) = rest.split_first()?;
        let which = if *service == "emulator" {
            Program::Emulator
        } else {
            Program::Service
        };
        return Some((which, arguments));
    }
    None
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

#[test]
fn every_command_in_the_docs_parses_and_every_script_exists() {
    let mut parsed_commands = 0;
    let mut emulator_commands = 0;
    let mut scripts = 0;
    let mut failures = Vec::new();
    for (path, parsed) in parsed_documents() {
        for (line, block) in &parsed.shell_blocks {
            for words in commands(block) {
                let words: Vec<&str> = words
                    .iter()
                    .map(String::as_str)
                    .skip_while(|word| is_assignment(word))
                    .collect();
                let Some(&program) = words.first() else {
                    continue;
                };
                if let Some((which, arguments)) = invocation(&words) {
                    parsed_commands += 1;
                    let parsed = match which {
                        Program::Service => {
                            let argv =
                                std::iter::once("finch-webhooks").chain(arguments.iter().copied());
                            Cli::try_parse_from(argv).map(drop)
                        }
                        Program::Emulator => {
                            emulator_commands += 1;
                            let argv =
                                std::iter::once("finch-emulator").chain(arguments.iter().copied());
                            finch_emulator::cli::Cli::try_parse_from(argv).map(drop)
                        }
                    };
                    if let Err(error) = parsed {
                        let first = error.to_string();
                        let first = first.lines().next().unwrap_or("").to_owned();
                        failures.push(format!(
                            "{}:{line}: `{}`: {first}",
                            shown(&path),
                            words.join(" ")
                        ));
                    }
                } else if program.contains('/') && !program.starts_with('/') {
                    scripts += 1;
                    let script = root().join(program);
                    let runnable = std::fs::metadata(&script).is_ok_and(|meta| {
                        use std::os::unix::fs::PermissionsExt as _;
                        meta.is_file() && meta.permissions().mode() & 0o111 != 0
                    });
                    if !runnable {
                        failures.push(format!(
                            "{}:{line}: `{program}` is not an executable file in the repository",
                            shown(&path)
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "commands in the docs that do not run:\n{}",
        failures.join("\n")
    );
    assert!(
        parsed_commands >= 30,
        "only {parsed_commands} finch-webhooks commands found"
    );
    assert!(
        emulator_commands >= 2,
        "only {emulator_commands} finch-emulator commands found"
    );
    assert!(scripts >= 3, "only {scripts} scripts found");
}

#[test]
fn the_readme_names_the_two_commands_and_ci_runs_the_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = parse(&readme).shell_blocks;
    let shown: Vec<Vec<String>> = blocks
        .iter()
        .flat_map(|(_, block)| commands(block))
        .collect();
    let words = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
    assert!(
        shown.contains(&words("cargo run --release -- dev")),
        "README shows how to run it locally"
    );
    assert!(
        shown.contains(&words("tests/run.sh")),
        "README shows how to run the tests"
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|line| line.trim() == "tests/run.sh"),
        ".ci/run runs the README's test command"
    );
    assert!(
        readme.lines().count() <= 220,
        "README.md is a map; the rest belongs in docs/"
    );
}

/// Every key the defaults file names, set or commented out for lack of a default.
fn setting_keys() -> BTreeSet<String> {
    DEFAULTS
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (key, _) = line.split_once(" = ")?;
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| key.to_owned())
        })
        .collect()
}

/// Whether `Settings` has the field: it refuses unknown ones.
fn is_setting(key: &str) -> bool {
    match Settings::with_overrides(&[(key, "1")]) {
        Ok(_) => true,
        Err(error) => !error.reason.contains("unknown field"),
    }
}

fn looks_like_a_variable(word: &str) -> bool {
    word.contains('_')
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn every_setting_the_docs_name_exists_and_the_configuration_page_lists_all() {
    let keys = setting_keys();
    assert!(keys.len() >= 40, "only {} settings found", keys.len());
    for key in &keys {
        assert!(
            is_setting(key),
            "{key} is in the defaults file but not a setting"
        );
    }
    assert!(
        !is_setting("no_such_setting"),
        "unknown names are told apart"
    );
    let variables: BTreeSet<String> = keys.iter().map(|key| key.to_ascii_uppercase()).collect();

    let mut unknown = Vec::new();
    for (path, parsed) in parsed_documents() {
        let mut mentions: Vec<(usize, String)> = parsed
            .inline_code
            .iter()
            .flat_map(|(line, code)| {
                code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|word| (*line, word.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (line, block) in &parsed.shell_blocks {
            for command in commands(block) {
                for word in command.iter().take_while(|word| is_assignment(word)) {
                    let name = word.split_once('=').map_or("", |(name, _)| name);
                    mentions.push((*line, name.to_owned()));
                }
            }
        }
        for (line, word) in mentions {
            // `RATE_LIMIT_*` reads as `RATE_LIMIT_`: a family of settings.
            let known = if word.ends_with('_') {
                variables.iter().any(|name| name.starts_with(&word))
                    || OTHER_PREFIXES.contains(&word.as_str())
            } else {
                variables.contains(&word) || OTHER_NAMES.contains(&word.as_str())
            };
            if looks_like_a_variable(&word) && !known {
                unknown.push(format!("{}:{line}: {word}", shown(&path)));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables the docs name that are neither settings nor known:\n{}",
        unknown.join("\n")
    );

    // The configuration page's tables list every setting, once, by its
    // variable name in the first column.
    let page = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut listed = BTreeMap::<String, usize>::new();
    for line in page.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((name, _)) = cell.split_once('`') else {
            continue;
        };
        if looks_like_a_variable(name) {
            *listed.entry(name.to_owned()).or_default() += 1;
        }
    }
    let listed_names: BTreeSet<String> = listed.keys().cloned().collect();
    let missing: Vec<_> = variables.difference(&listed_names).collect();
    let extra: Vec<_> = listed_names.difference(&variables).collect();
    let twice: Vec<_> = listed.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "docs/configuration.md: missing {missing:?}, not settings {extra:?}, listed twice {twice:?}"
    );
}
