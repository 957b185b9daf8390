//! The last stage of the repository's `Dockerfile`, read by its grammar
//! (line continuations, comments, JSON and shell forms, `KEY=value` lists),
//! so the image test runs the binary as the image would: same user,
//! working directory, environment, volume, files, entrypoint and health
//! check.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "shared by tests that each use part of it; a test fails by panicking"
)]

use std::collections::BTreeMap;

/// A `COPY` into the image.
#[derive(Debug, Clone)]
pub struct Copy {
    /// `--from=STAGE`, when the source is another stage's output.
    pub from: Option<String>,
    /// `--chown=UID:GID`.
    pub chown: Option<(u32, u32)>,
    pub sources: Vec<String>,
    pub destination: String,
}

/// What the final stage sets.
#[derive(Debug, Default)]
pub struct FinalStage {
    pub base: String,
    pub user: Option<(u32, u32)>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub copies: Vec<Copy>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub healthcheck: Vec<String>,
    pub exposed: Vec<u16>,
}

impl FinalStage {
    /// The command the container runs: ENTRYPOINT then CMD.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Reads `text` (a Dockerfile) and returns its last stage.
pub fn final_stage(text: &str) -> FinalStage {
    let mut stage = FinalStage::default();
    for (instruction, arguments) in instructions(text) {
        match instruction.as_str() {
            "FROM" => {
                stage = FinalStage {
                    base: arguments.split_whitespace().next().unwrap().to_owned(),
                    ..FinalStage::default()
                }
            }
            "USER" => stage.user = Some(ids(&arguments)),
            "WORKDIR" => stage.workdir = Some(arguments.trim().to_owned()),
            "ENV" => stage.env.extend(env_pairs(&arguments)),
            "VOLUME" => stage.volumes.extend(words_or_json(&arguments)),
            "COPY" => stage.copies.push(copy(&arguments)),
            "ENTRYPOINT" => stage.entrypoint = words_or_json(&arguments),
            "CMD" => stage.cmd = words_or_json(&arguments),
            "EXPOSE" => stage.exposed.extend(
                arguments
                    .split_whitespace()
                    .map(|port| port.split('/').next().unwrap().parse::<u16>().unwrap()),
            ),
            "HEALTHCHECK" => {
                let (_, command) = arguments
                    .split_once("CMD")
                    .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {arguments}"));
                stage.healthcheck = words_or_json(command);
            }
            _ => {}
        }
    }
    stage
}

/// Instructions with their arguments, continuations joined and comments
/// dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instruction, arguments) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((instruction.to_uppercase(), arguments.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// `["a", "b"]` (JSON form) or `a b` (shell form, split on spaces).
fn words_or_json(arguments: &str) -> Vec<String> {
    let arguments = arguments.trim();
    if arguments.starts_with('[') {
        serde_json::from_str(arguments).unwrap_or_else(|e| panic!("{arguments}: {e}"))
    } else {
        arguments.split_whitespace().map(str::to_owned).collect()
    }
}

/// `UID[:GID]`, numeric (a name would need the image's /etc/passwd).
fn ids(text: &str) -> (u32, u32) {
    let (uid, gid) = text
        .trim()
        .split_once(':')
        .unwrap_or((text.trim(), text.trim()));
    (
        uid.parse()
            .unwrap_or_else(|_| panic!("USER must be numeric: {text}")),
        gid.parse()
            .unwrap_or_else(|_| panic!("group must be numeric: {text}")),
    )
}

/// `KEY=value KEY2="quoted value"`, or the legacy `KEY value`.
fn env_pairs(arguments: &str) -> Vec<(String, String)> {
    if !arguments.split_whitespace().next().unwrap().contains('=') {
        let (key, value) = arguments.split_once(char::is_whitespace).unwrap();
        return vec![(key.to_owned(), value.trim().to_owned())];
    }
    let mut pairs = Vec::new();
    let mut rest = arguments.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap();
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        pairs.push((key.trim().to_owned(), value.to_owned()));
        rest = next.trim();
    }
    pairs
}

fn copy(arguments: &str) -> Copy {
    let mut from = None;
    let mut chown = None;
    let mut paths = Vec::new();
    for word in arguments.split_whitespace() {
        if let Some(stage) = word.strip_prefix("--from=") {
            from = Some(stage.to_owned());
        } else if let Some(owner) = word.strip_prefix("--chown=") {
            chown = Some(ids(owner));
        } else if word.starts_with("--") {
            panic!("COPY flag the image test does not know: {word}");
        } else {
            paths.push(word.to_owned());
        }
    }
    let destination = paths.pop().unwrap();
    Copy {
        from,
        chown,
        sources: paths,
        destination,
    }
}

#[test]
fn reads_the_forms_it_meets() {
    let stage = final_stage(
        "FROM a AS build\nUSER 1\nFROM b:tag\n# comment\nCOPY --from=build --chown=7:8 /out/x /y\nENV A=1 \\\n    B=\"two words\"\nENV C 3\nUSER 5:6\nVOLUME [\"/v\"]\nHEALTHCHECK --interval=1s \\\n  CMD [\"/bin/h\", \"x\"]\nENTRYPOINT [\"/e\"]\nCMD run\nEXPOSE 80 90/tcp\n",
    );
    assert_eq!(stage.base, "b:tag");
    assert_eq!(stage.user, Some((5, 6)));
    assert_eq!(stage.env["A"], "1");
    assert_eq!(stage.env["B"], "two words");
    assert_eq!(stage.env["C"], "3");
    assert_eq!(stage.volumes, ["/v"]);
    assert_eq!(stage.copies[0].chown, Some((7, 8)));
    assert_eq!(stage.copies[0].from.as_deref(), Some("build"));
    assert_eq!(stage.healthcheck, ["/bin/h", "x"]);
    assert_eq!(stage.command(), ["/e", "run"]);
    assert_eq!(stage.exposed, [80, 90]);
}
