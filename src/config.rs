//! `dualpub.toml`: the configuration, with `DUALPUB_<SECTION>_<KEY>` environment overrides and secrets by
//! reference only (`…_env` or `…_file`, never inline). Every problem names the file, the key and what to do.

use crate::mapping::{DisplayPolicy, Domain, MappingContext, MappingError, MappingSet, DIR_FILES};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `error` is shown in the message and deliberately not a `#[source]`: `{:#}` would print it twice.
    #[error("cannot read the configuration file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// A secret value: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencySection {
    pub name: Option<String>,
    pub credit_code: Option<String>,
    /// 安全生产, 特种设备, 消防 or 其他; anything else is refused (it decides the minimum display period).
    pub domain: Option<Domain>,
    /// The display period of penalties when the source gives none, in months (clamped to the legal window).
    pub display_months: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub page_size: Option<u32>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSection {
    pub url: Option<String>,
    pub app_key: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub receiver: Option<String>,
    pub batch_size: Option<u32>,
    pub concurrency: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub retry_budget_secs: Option<u64>,
    pub max_backoff_secs: Option<u64>,
    pub page_size: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSection {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    pub overlap_minutes: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agency: AgencySection,
    #[serde(default)]
    pub source: SourceSection,
    #[serde(default)]
    pub platform: PlatformSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub mapping: MappingSection,
    #[serde(default)]
    pub sync: SyncSection,
    #[serde(default)]
    pub log: LogSection,
    /// Where the value of each `(section, key)` came from, for messages.
    #[serde(skip)]
    sources: Sources,
}

/// Where the value of each `(section, key)` came from.
type Sources = BTreeMap<(String, String), Source>;

/// Where a key's value came from, so that a message blames the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The configuration file, at this line (when known).
    File(Option<usize>),
    /// This environment variable, `DUALPUB_<SECTION>_<KEY>`, which overrides the file.
    Env(String),
}

impl Source {
    /// Keys are checked in this order: the file's from top to bottom, then the environment's.
    fn order(&self) -> (u8, usize) {
        match self {
            Source::File(line) => (0, line.unwrap_or(usize::MAX)),
            Source::Env(_) => (1, 0),
        }
    }
}

/// The origin of a configuration read without a file.
const NO_FILE: &str = "(no configuration file)";

/// The type of each key, so an environment override becomes the right TOML value.
#[derive(Clone, Copy, PartialEq)]
enum KeyType {
    Str,
    Int,
}

const KEYS: &[(&str, &str, KeyType)] = &[
    ("agency", "name", KeyType::Str),
    ("agency", "credit_code", KeyType::Str),
    ("agency", "domain", KeyType::Str),
    ("agency", "display_months", KeyType::Int),
    ("source", "url", KeyType::Str),
    ("source", "token_env", KeyType::Str),
    ("source", "token_file", KeyType::Str),
    ("source", "page_size", KeyType::Int),
    ("source", "timeout_secs", KeyType::Int),
    ("platform", "url", KeyType::Str),
    ("platform", "app_key", KeyType::Str),
    ("platform", "secret_env", KeyType::Str),
    ("platform", "secret_file", KeyType::Str),
    ("platform", "receiver", KeyType::Str),
    ("platform", "batch_size", KeyType::Int),
    ("platform", "concurrency", KeyType::Int),
    ("platform", "timeout_secs", KeyType::Int),
    ("platform", "retry_budget_secs", KeyType::Int),
    ("platform", "max_backoff_secs", KeyType::Int),
    ("platform", "page_size", KeyType::Int),
    ("store", "path", KeyType::Str),
    ("mapping", "dir", KeyType::Str),
    ("sync", "overlap_minutes", KeyType::Int),
    ("log", "format", KeyType::Str),
    ("log", "level", KeyType::Str),
];

const SECTIONS: &[&str] = &[
    "agency", "source", "platform", "store", "mapping", "sync", "log",
];

/// Environment variables that are not key overrides.
const NOT_OVERRIDES: &[&str] = &["DUALPUB_CONFIG", "DUALPUB_LOG"];

impl RawConfig {
    /// Reads a file (or nothing, when `path` is None) and applies the `DUALPUB_<SECTION>_<KEY>` overrides from
    /// `env`. Every problem names the file and line (or the environment variable) and the `[section] key`.
    pub fn load(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<(RawConfig, String), ConfigError> {
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| NO_FILE.into());
        let mut sources = BTreeMap::new();
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = crate::read_settings_text(p).map_err(|error| ConfigError::Read {
                    path: origin.clone(),
                    error,
                })?;
                for secret in ["token", "secret"] {
                    if let Some(line) = text.lines().position(|l| {
                        l.trim_start().starts_with(secret) && l.contains('=') && {
                            let k = l.split('=').next().unwrap_or("").trim();
                            k == secret
                        }
                    }) {
                        return Err(ConfigError::Invalid {
                            path: origin.clone(),
                            message: format!(
                                "line {}: `{secret}` must not be written in the file; give `{secret}_env = \"VARIABLE\"` or `{secret}_file = \"/path\"` instead",
                                line + 1
                            ),
                        });
                    }
                }
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        path: origin.clone(),
                        message: format!(
                            "{}{}",
                            e.span()
                                .map(|s| format!("line {}: ", line_at(&text, s.start)))
                                .unwrap_or_default(),
                            e.message().trim()
                        ),
                    })?;
                check_structure(&table, &text, &origin, &mut sources)?;
                table
            }
            None => toml::Table::new(),
        };
        // The variables that `token_env` and `secret_env` name hold secrets: they are read, never taken for
        // key overrides, whatever their name (e.g. DUALPUB_PLATFORM_PASSWORD).
        let secret_vars: Vec<String> = KEYS
            .iter()
            .filter(|(_, key, _)| key.ends_with("_env"))
            .filter_map(|(section, key, _)| {
                let var = format!("DUALPUB_{}_{}", section.to_uppercase(), key.to_uppercase());
                match env.iter().find(|(k, _)| *k == var) {
                    Some((_, v)) => Some(v.clone()),
                    None => Some(table.get(*section)?.get(*key)?.as_str()?.to_string()),
                }
            })
            .collect();
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("DUALPUB_") else {
                continue;
            };
            // DUALPUB_SOURCE_TOKEN and DUALPUB_PLATFORM_SECRET are the conventional secret variables, not keys.
            if NOT_OVERRIDES.contains(&k.as_str())
                || secret_vars.contains(k)
                || rest == "SOURCE_TOKEN"
                || rest == "PLATFORM_SECRET"
            {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            if !SECTIONS.iter().any(|s| lower.starts_with(&format!("{s}_"))) {
                continue;
            }
            let Some((section, key, ty)) = KEYS
                .iter()
                .find(|(s, key, _)| lower == format!("{s}_{key}"))
            else {
                return Err(ConfigError::Invalid {
                    path: format!("environment variable {k}"),
                    message: "is not a configuration key override (a variable holding a secret must be named by `token_env` or `secret_env`); known: ".to_string()
                        + &KEYS
                            .iter()
                            .map(|(s, key, _)| {
                                format!("DUALPUB_{}_{}", s.to_uppercase(), key.to_uppercase())
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                });
            };
            sources.insert(
                (section.to_string(), key.to_string()),
                Source::Env(k.clone()),
            );
            let value = match ty {
                KeyType::Str => toml::Value::String(v.clone()),
                KeyType::Int => match v.trim().parse() {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => {
                        let message = format!("`{v}` is not a whole number");
                        return Err(key_problem(&sources, &origin, section, key, message));
                    }
                },
            };
            let sec = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = sec {
                t.insert(key.to_string(), value);
            }
        }
        // Each key on its own, in the order of the file, so a wrong type names its key and where it came from.
        let mut keys: Vec<(&(String, String), &Source)> = sources.iter().collect();
        keys.sort_by_key(|(_, source)| source.order());
        for ((section, key), _) in keys {
            let Some(value) = table.get(section).and_then(|s| s.get(key)).cloned() else {
                continue;
            };
            let mut one = toml::Table::new();
            one.insert(
                section.clone(),
                toml::Value::Table([(key.clone(), value)].into_iter().collect()),
            );
            if let Err(e) = toml::Value::Table(one).try_into::<RawConfig>() {
                return Err(key_problem(
                    &sources,
                    &origin,
                    section,
                    key,
                    e.message().trim(),
                ));
            }
        }
        let mut raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    path: origin.clone(),
                    message: e.message().trim().to_string(),
                })?;
        raw.sources = sources;
        Ok((raw, origin))
    }

    /// An error about the value of `[section] key`, naming where that value came from.
    fn problem(
        &self,
        origin: &str,
        section: &str,
        key: &str,
        message: impl fmt::Display,
    ) -> ConfigError {
        key_problem(&self.sources, origin, section, key, message)
    }

    /// Where to find the configuration: `--config`, else `$DUALPUB_CONFIG`, else `./dualpub.toml` if it exists.
    pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = flag {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("DUALPUB_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let default = PathBuf::from("dualpub.toml");
        default.exists().then_some(default)
    }

    /// The mappings: each file of the configured directory that is there, else the one built into the binary
    /// (logged at info). A directory that is not there, or holds none of [`DIR_FILES`], is an error naming
    /// `[mapping] dir`; its other files (but hidden ones and editors' backups) are named in a warning, with the
    /// file each was most likely meant to be. `origin` is the configuration file, for messages.
    pub fn mappings(&self, origin: &str) -> Result<MappingSet, ConfigError> {
        let Some(dir) = &self.mapping.dir else {
            return Ok(MappingSet::builtin());
        };
        let problem = |message: String| self.problem(origin, "mapping", "dir", message);
        let wanted = format!(
            "give a directory holding the files to use instead of the built-in ones (any of {}), or remove the key",
            DIR_FILES.join(", ")
        );
        if dir.as_os_str().is_empty() {
            return Err(problem(format!("is empty; {wanted}")));
        }
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(problem(format!(
                    "{} is not a directory; {wanted}",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem(format!(
                    "the directory {} does not exist; {wanted}",
                    dir.display()
                )))
            }
            Err(e) => {
                return Err(problem(format!(
                    "cannot use {}: {e}; {wanted}",
                    dir.display()
                )))
            }
        }
        // What the directory holds, but for hidden files and editors' backups (names with `/` are folders).
        let (entries, hidden) = std::fs::read_dir(dir)
            .and_then(|list| {
                let (mut names, mut hidden) = (Vec::new(), Vec::new());
                for entry in list {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if hidden_or_backup(&name) {
                        hidden.push(name);
                    } else {
                        let folder = entry.file_type().is_ok_and(|t| t.is_dir());
                        names.push(if folder { format!("{name}/") } else { name });
                    }
                }
                names.sort();
                hidden.sort();
                Ok((names, hidden))
            })
            .map_err(|e| problem(format!("cannot list {}: {e}; {wanted}", dir.display())))?;
        let (from_dir, built_in): (Vec<&str>, Vec<&str>) = DIR_FILES
            .iter()
            .partition(|f| entries.iter().any(|e| e.trim_end_matches('/') == **f));
        // A directory that holds none of the files is a mistake (a copy not made yet, the wrong directory, a file
        // misnamed): every mapping would be the built-in one while the operator takes their edit to be in force.
        if from_dir.is_empty() {
            let holds = if !entries.is_empty() {
                format!("holds none of them, only {}", with_suggestions(&entries))
            } else if !hidden.is_empty() {
                format!(
                    "holds only hidden files and editors' backups ({})",
                    hidden.join(", ")
                )
            } else {
                "is empty".to_string()
            };
            return Err(problem(format!(
                "the directory {} is meant to hold the mapping files to use instead of the built-in ones \
                 ({}), but {holds}; put there the files to change, named as these (start from copies of the \
                 files under mappings/ in dualpub's source), or remove the key",
                dir.display(),
                DIR_FILES.join(", "),
            )));
        }
        for f in &from_dir {
            // A link to nothing would be taken for a file that is not there, and the built-in one used.
            if let Err(e) = std::fs::metadata(dir.join(f)) {
                return Err(problem(format!(
                    "cannot use {}: {e}; {wanted}",
                    dir.join(f).display()
                )));
            }
        }
        tracing::info!(
            dir = %dir.display(),
            "[mapping] dir: from the directory: {}; built in: {}",
            from_dir.join(", "),
            if built_in.is_empty() { "none".to_string() } else { built_in.join(", ") },
        );
        let (set, read) = MappingSet::load_dir_reporting_files(dir)?;
        // Files the directory holds besides those it is read for (by the first part of their path: a code-table
        // file a mapping names may be in a folder): most likely a misnamed copy, whose edit is not in force.
        let unread: Vec<String> = entries
            .into_iter()
            .filter(|e| {
                let name = e.trim_end_matches('/');
                !DIR_FILES.contains(&name)
                    && !read.iter().any(|r| {
                        Path::new(r).components().next() == Path::new(name).components().next()
                    })
            })
            .collect();
        if !unread.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                "[mapping] dir: not read, so not in force: {}; dualpub reads there only {} and the code-table \
                 files its mappings name (`codes = …`): rename a file meant to be used; move the others out of \
                 the directory",
                with_suggestions(&unread),
                DIR_FILES.join(", "),
            );
        }
        Ok(set)
    }

    /// The agency's name and code as they are checked (trimmed): a space from an environment file must not go
    /// into every record.
    pub fn mapping_context(&self) -> MappingContext {
        let trimmed = |v: &Option<String>| v.as_deref().map(|s| s.trim().to_string());
        MappingContext {
            agency_name: trimmed(&self.agency.name),
            agency_credit_code: trimmed(&self.agency.credit_code),
            display: DisplayPolicy::for_domain(
                self.agency.domain.unwrap_or_default(),
                self.agency.display_months,
            ),
            today: None,
        }
    }
}

/// Everything `sync` and `reconcile` need, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub origin: String,
    pub agency_name: String,
    pub agency_credit_code: String,
    pub mapping_context: MappingContext,
    pub source_url: String,
    pub source_token: Secret,
    pub source_page_size: u32,
    pub source_timeout: Duration,
    pub platform_url: String,
    pub app_key: String,
    pub platform_secret: Secret,
    pub receiver: String,
    pub batch_size: usize,
    pub concurrency: usize,
    pub platform_timeout: Duration,
    pub retry_budget: Duration,
    pub max_backoff: Duration,
    pub platform_page_size: u32,
    pub store_path: PathBuf,
    pub overlap: chrono::Duration,
    pub mapping_dir: Option<PathBuf>,
}

impl Config {
    /// A digest of everything that decides whether a record is valid: the agency's name, code and display policy,
    /// and the mapping and code-table files `mappings` was read from (`MappingSet::fingerprint`: the files in force,
    /// wherever they are, and nothing else). When it changes, what is in quarantine was judged under the old settings
    /// (`sync` says so once; `quarantine retry` judges it again).
    pub fn validation_fingerprint(&self, mappings: &crate::mapping::MappingSet) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let ctx = &self.mapping_context;
        for part in [
            ctx.agency_name.as_deref().unwrap_or_default(),
            ctx.agency_credit_code.as_deref().unwrap_or_default(),
            &format!("{:?}", ctx.display),
            &mappings.fingerprint,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Checks a raw configuration for the networked commands; reads the secrets it refers to.
    pub fn from_raw(
        raw: &RawConfig,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Config::checked(raw, origin, env, true)
    }

    /// Checks a raw configuration for the commands that only read the store (`status`, `quarantine list|show`):
    /// the secrets are neither read nor required, so an operator can look without loading them.
    pub fn from_raw_local(
        raw: &RawConfig,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Config::checked(raw, origin, env, false)
    }

    fn checked(
        raw: &RawConfig,
        origin: &str,
        env: &[(String, String)],
        secrets: bool,
    ) -> Result<Config, ConfigError> {
        let bad =
            |section: &str, key: &str, message: String| raw.problem(origin, section, key, message);
        let need = |v: &Option<String>,
                    section: &str,
                    key: &str,
                    what: &str|
         -> Result<String, ConfigError> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(bad(section, key, format!("is missing; set it to {what}"))),
            }
        };
        let agency_name = need(
            &raw.agency.name,
            "agency",
            "name",
            "the data source unit's name (数据来源单位)",
        )?;
        let agency_credit_code = need(
            &raw.agency.credit_code,
            "agency",
            "credit_code",
            "the data source unit's USCC",
        )?;
        // The name goes into every record (数据来源单位): a character XML cannot carry or a name past the field's
        // 200 would hold back every record, with advice to fix the source system.
        if let Some((i, c)) = crate::xml::first_illegal_char(&agency_name) {
            return Err(bad(
                "agency",
                "name",
                format!(
                    "character {} is U+{:04X}, which XML cannot carry; remove it",
                    i + 1,
                    c as u32
                ),
            ));
        }
        if agency_name.chars().count() > 200 {
            return Err(bad(
                "agency",
                "name",
                format!(
                    "is {} characters long; the 数据来源单位 field takes at most 200",
                    agency_name.chars().count()
                ),
            ));
        }
        if let Err(e) = crate::ids::Uscc::parse(&agency_credit_code) {
            return Err(bad(
                "agency",
                "credit_code",
                format!("`{agency_credit_code}` is not a valid USCC: {e}"),
            ));
        }
        let source_url = need(
            &raw.source.url,
            "source",
            "url",
            "the enforcement system's base URL",
        )?;
        let platform_url = need(
            &raw.platform.url,
            "platform",
            "url",
            "the credit platform's base URL",
        )?;
        for (section, u) in [("source", &source_url), ("platform", &platform_url)] {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad(
                    section,
                    "url",
                    format!("`{u}` must start with http:// or https://"),
                ));
            }
        }
        let app_key = need(
            &raw.platform.app_key,
            "platform",
            "app_key",
            "the app key the platform issued",
        )?;
        let receiver = need(
            &raw.platform.receiver,
            "platform",
            "receiver",
            "the platform's receiver code",
        )?;
        let (source_token, platform_secret) = if secrets {
            (
                read_secret(
                    raw,
                    origin,
                    "source",
                    "token",
                    &raw.source.token_env,
                    &raw.source.token_file,
                    env,
                )?,
                read_secret(
                    raw,
                    origin,
                    "platform",
                    "secret",
                    &raw.platform.secret_env,
                    &raw.platform.secret_file,
                    env,
                )?,
            )
        } else {
            (Secret::new(""), Secret::new(""))
        };
        let batch_size = raw.platform.batch_size.unwrap_or(200);
        if !(1..=500).contains(&batch_size) {
            return Err(bad("platform", "batch_size", format!("{batch_size} is outside 1..=500 (the platform takes at most 500 records a message)")));
        }
        let concurrency = raw.platform.concurrency.unwrap_or(4);
        if !(1..=64).contains(&concurrency) {
            return Err(bad(
                "platform",
                "concurrency",
                format!("{concurrency} is outside 1..=64"),
            ));
        }
        let source_page_size = raw.source.page_size.unwrap_or(500);
        // A page of one item can only continue exactly after it: a record committed late behind it would be missed.
        if !(2..=1000).contains(&source_page_size) {
            return Err(bad(
                "source",
                "page_size",
                format!("{source_page_size} is outside 2..=1000 (a page of one record cannot look back for late commits)"),
            ));
        }
        let overlap_minutes = raw.sync.overlap_minutes.unwrap_or(10);
        // Further back, the checkpoint minus the window is no four-digit year: the source refuses `since`, and the
        // message sent the operator to [source] url.
        if overlap_minutes > MAX_OVERLAP_MINUTES {
            return Err(bad(
                "sync",
                "overlap_minutes",
                format!(
                    "{overlap_minutes} is more than {MAX_OVERLAP_MINUTES} (about 190 years; the window reaches before any \
                     date the feed can be asked for)"
                ),
            ));
        }
        let platform_page_size = raw.platform.page_size.unwrap_or(1000);
        if !(1..=5000).contains(&platform_page_size) {
            return Err(bad(
                "platform",
                "page_size",
                format!("{platform_page_size} is outside 1..=5000"),
            ));
        }
        let store_path = raw.store.path.clone().ok_or_else(|| {
            bad(
                "store",
                "path",
                "is missing; set it to a directory dualpub may own, e.g. /var/lib/dualpub".into(),
            )
        })?;
        if store_path.to_string_lossy().trim().is_empty() {
            return Err(bad(
                "store",
                "path",
                "is empty; set it to a directory dualpub may own, e.g. /var/lib/dualpub".into(),
            ));
        }
        if let Some(f) = &raw.log.format {
            if f != "text" && f != "json" {
                return Err(bad(
                    "log",
                    "format",
                    format!("`{f}`: expected \"text\" or \"json\""),
                ));
            }
        }
        if let Some(level) = &raw.log.level {
            if let Err(e) = log_filter(level) {
                return Err(bad("log", "level", e));
            }
        }
        let secs =
            |v: Option<u64>, d: u64, section: &str, key: &str| -> Result<Duration, ConfigError> {
                let s = v.unwrap_or(d);
                if s == 0 {
                    return Err(bad(section, key, format!("{s}: must be at least 1 second")));
                }
                Ok(Duration::from_secs(s))
            };
        Ok(Config {
            origin: origin.to_string(),
            mapping_context: raw.mapping_context(),
            agency_name,
            agency_credit_code,
            source_url: source_url.trim_end_matches('/').to_string(),
            source_token,
            source_page_size,
            source_timeout: secs(raw.source.timeout_secs, 30, "source", "timeout_secs")?,
            platform_url: platform_url.trim_end_matches('/').to_string(),
            app_key,
            platform_secret,
            receiver,
            batch_size: batch_size as usize,
            concurrency: concurrency as usize,
            platform_timeout: secs(raw.platform.timeout_secs, 30, "platform", "timeout_secs")?,
            retry_budget: secs(
                raw.platform.retry_budget_secs,
                300,
                "platform",
                "retry_budget_secs",
            )?,
            max_backoff: secs(
                raw.platform.max_backoff_secs,
                30,
                "platform",
                "max_backoff_secs",
            )?,
            platform_page_size,
            store_path,
            overlap: chrono::Duration::minutes(i64::from(overlap_minutes)),
            mapping_dir: raw.mapping.dir.clone(),
        })
    }
}

/// The largest `[sync] overlap_minutes`: about 190 years.
const MAX_OVERLAP_MINUTES: u32 = 100_000_000;

/// `[A-Za-z_][A-Za-z0-9_]*`: what a secret's `…_env` key must hold.
fn looks_like_variable(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a `…_env` value that names no set variable may be echoed: a conventional variable name (capitals,
/// digits and `_`, with a `_` or at most 12 long). A secret put there by mistake — hex, base64, a JWT, mixed case —
/// mostly also passes [`looks_like_variable`], and must not reach a cron log.
fn shown_as_variable(s: &str) -> bool {
    looks_like_variable(s)
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && (s.contains('_') || s.len() <= 12)
}

/// Why the source token (`[source] token_env` / `token_file`, sent in an HTTP header) cannot be sent, if it cannot:
/// a line break or another control character (a file of two lines), or a character past ASCII. Unchecked, every
/// request failed before it left and the run retried it as an outage until its budget was spent (exit 3).
fn unsendable(token: &str) -> Option<String> {
    let (i, c) = token
        .chars()
        .enumerate()
        .find(|(_, c)| !(' '..='~').contains(c))?;
    let what = match c {
        '\n' | '\r' => "a line break (it must be one line)".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
        c => format!("U+{:04X}, which is not ASCII", c as u32),
    };
    Some(format!(
        "the token holds {what} at character {}; an HTTP header cannot carry it, so it is not the token the enforcement system issued",
        i + 1
    ))
}

fn read_secret(
    raw: &RawConfig,
    origin: &str,
    section: &str,
    name: &str,
    env_name: &Option<String>,
    file: &Option<PathBuf>,
    env: &[(String, String)],
) -> Result<Secret, ConfigError> {
    let by_env = format!("{name}_env");
    let by_file = format!("{name}_file");
    let bad = |key: &str, message: String| raw.problem(origin, section, key, message);
    let read = |key: &str, v: &str| -> Result<Secret, ConfigError> {
        match (section, unsendable(v.trim())) {
            ("source", Some(why)) => Err(bad(key, why)),
            _ => Ok(Secret::new(v.trim())),
        }
    };
    match (env_name, file) {
        (Some(_), Some(_)) => Err(bad(&by_file, format!("give only one of `{by_env}` and `{by_file}`"))),
        (Some(var), None) => match env.iter().find(|(k, _)| k == var) {
            Some((_, v)) if !v.trim().is_empty() => read(&by_env, v),
            // The value is echoed only when it looks like a variable's name: a secret put here by mistake is not.
            _ if !looks_like_variable(var) => Err(bad(
                &by_env,
                format!(
                    "is not the name of an environment variable (letters, digits and _): `{by_env}` names the \
                     variable that holds the {name}, it is not the {name} itself; if you put the {name} here, \
                     treat it as exposed and replace it"
                ),
            )),
            _ if shown_as_variable(var) => Err(bad(&by_env, format!("\"{var}\", but the environment variable {var} is not set or empty"))),
            _ => Err(bad(
                &by_env,
                format!(
                    "names an environment variable that is not set or empty (its name is not shown: it does not \
                     look like a variable's name such as DUALPUB_{}_{}, so it may be the {name} itself; if so, \
                     treat it as exposed and replace it)",
                    section.to_uppercase(),
                    name.to_uppercase()
                ),
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => read(&by_file, &s),
            Ok(_) => Err(bad(&by_file, format!("\"{}\" is empty", path.display()))),
            Err(e) => Err(bad(&by_file, format!("\"{}\" cannot be read: {e}", path.display()))),
        },
        (None, None) => Err(bad(&by_env, format!(
            "the {name} is missing: set `{by_env} = \"VARIABLE\"` (an environment variable holding it) or `{by_file} = \"/path\"`"
        ))),
    }
}

/// An error about the value of `[section] key`, naming where that value came from: the file and its line,
/// or the environment variable that overrides it.
fn key_problem(
    sources: &Sources,
    origin: &str,
    section: &str,
    key: &str,
    message: impl fmt::Display,
) -> ConfigError {
    match sources.get(&(section.to_string(), key.to_string())) {
        Some(Source::Env(var)) => ConfigError::Invalid {
            path: if origin == NO_FILE {
                format!("environment variable {var} (sets [{section}] {key})")
            } else {
                format!("environment variable {var} (overrides [{section}] {key} of {origin})")
            },
            message: message.to_string(),
        },
        Some(Source::File(Some(line))) => ConfigError::Invalid {
            path: origin.to_string(),
            message: format!("line {line}: [{section}] {key}: {message}"),
        },
        _ => ConfigError::Invalid {
            path: origin.to_string(),
            message: format!("[{section}] {key}: {message}"),
        },
    }
}

/// A name in a `[mapping] dir` that is nothing to read or warn about: a hidden file (`.permit.toml.swp`, `.git`)
/// or an editor's backup (`permit.toml~`, `#permit.toml#`, `permit.toml.bak`).
fn hidden_or_backup(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
        || [".swp", ".swo", ".bak", ".orig", ".old"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Names of a `[mapping] dir`, each with the file of [`DIR_FILES`] it was most likely meant to be
/// (`permits.toml (meant as permit.toml?)`).
fn with_suggestions(names: &[String]) -> String {
    names
        .iter()
        .map(|n| match meant_as(n) {
            Some(f) => format!("{n} (meant as {f}?)"),
            None => n.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file of [`DIR_FILES`] a misnamed one was meant to be: the same name in other case, with something added
/// (`permit.toml.txt`), or a few letters off (`permits.toml`, `penalties.toml`, `calender.toml`).
fn meant_as(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('/').to_lowercase();
    if let Some(f) = DIR_FILES.iter().find(|f| name.starts_with(*f)) {
        return Some(f);
    }
    DIR_FILES
        .iter()
        .map(|f| (edit_distance(&name, f), *f))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, f)| f)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The tracing filter for a log setting, `[log] level` or `$DUALPUB_LOG`: a level (trace, debug, info, warn,
/// error, off) applies to dualpub's own logs; a setting with `=` or `,` is a whole filter, e.g.
/// `dualpub=debug,hyper=warn`. Anything else is refused rather than silently replaced by the default.
pub fn log_filter(spec: &str) -> Result<String, String> {
    let spec = spec.trim();
    let expected = "expected a level (trace, debug, info, warn, error, off) or a filter like `dualpub=debug,hyper=warn`";
    // (tracing reads "" as the level `error`; here it is a mistake)
    let is_level = !spec.is_empty() && spec.parse::<tracing::level_filters::LevelFilter>().is_ok();
    let directives = if is_level {
        format!("dualpub={spec}")
    } else if spec.contains(['=', ',']) {
        spec.to_string()
    } else {
        return Err(format!("`{spec}`: {expected}"));
    };
    match tracing_subscriber::EnvFilter::try_new(&directives) {
        Ok(_) => Ok(directives),
        Err(e) => Err(format!("`{spec}`: {e}")),
    }
}

/// The line (counted from 1) of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Checks the file's sections and keys against the known ones, and records the line of each key in `sources`.
/// Of several problems, the first in the file is reported.
fn check_structure(
    table: &toml::Table,
    text: &str,
    origin: &str,
    sources: &mut Sources,
) -> Result<(), ConfigError> {
    // `text` is valid TOML (it parsed into `table`); this parse adds where each key is.
    let doc = toml_edit::ImDocument::parse(text).ok();
    let line_of = |section: &str, key: Option<&str>| -> Option<usize> {
        let (k, item) = doc.as_ref()?.get_key_value(section)?;
        let span = match key {
            None => k.span().or_else(|| item.span()),
            Some(key) => {
                let (k, item) = item.as_table_like()?.get_key_value(key)?;
                k.span().or_else(|| item.span())
            }
        }?;
        Some(line_at(text, span.start))
    };
    let mut problems: Vec<(Option<usize>, String)> = Vec::new();
    for (section, value) in table {
        let line = line_of(section, None);
        let Some(keys) = value.as_table() else {
            problems.push((
                line,
                if SECTIONS.contains(&section.as_str()) {
                    format!("[{section}] must be a section (a table of keys), not a single value")
                } else {
                    format!("`{section}` is a key outside any section; put it under its [section]")
                },
            ));
            continue;
        };
        if !SECTIONS.contains(&section.as_str()) {
            let known = SECTIONS
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", ");
            problems.push((
                line,
                format!("[{section}] is an unknown section; the sections are {known}"),
            ));
            continue;
        }
        for key in keys.keys() {
            let line = line_of(section, Some(key));
            if KEYS.iter().any(|(s, k, _)| s == section && k == key) {
                sources.insert((section.clone(), key.clone()), Source::File(line));
            } else {
                let known = KEYS
                    .iter()
                    .filter(|(s, ..)| s == section)
                    .map(|(_, k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.push((
                    line,
                    format!("[{section}] {key}: unknown key; the keys of [{section}] are {known}"),
                ));
            }
        }
    }
    match problems
        .into_iter()
        .min_by_key(|(line, _)| line.unwrap_or(usize::MAX))
    {
        None => Ok(()),
        Some((line, message)) => Err(ConfigError::Invalid {
            path: origin.to_string(),
            message: match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_example_file_loads_with_its_secrets_from_the_environment() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("dualpub.example.toml");
        let e = env(&[
            ("DUALPUB_SOURCE_TOKEN", "t"),
            ("DUALPUB_PLATFORM_SECRET", "s"),
            ("DUALPUB_STORE_PATH", "/tmp/x"),
        ]);
        let (raw, origin) = RawConfig::load(Some(&p), &e).unwrap();
        let cfg = Config::from_raw(&raw, &origin, &e).unwrap();
        assert_eq!(
            cfg.store_path,
            PathBuf::from("/tmp/x"),
            "environment overrides the file"
        );
        assert_eq!(cfg.source_token.expose(), "t");
        assert_eq!(format!("{:?}", cfg.platform_secret), "Secret(***)");
        assert!(!format!("{cfg:?}").contains("\"s\""));
        assert_eq!(cfg.mapping_context.display.min_months, 12);
    }

    /// `domain = "应急管理"` silently gave the 3-month minimum of 其他; an unknown domain is now refused.
    #[test]
    fn an_unknown_domain_is_refused_naming_the_accepted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        for (text, vars) in [
            ("[agency]\ndomain = \"应急管理\"\n", vec![]),
            ("[agency]\ndomain = \"\"\n", vec![]),
            ("", vec![("DUALPUB_AGENCY_DOMAIN", "应急管理")]),
        ] {
            std::fs::write(&p, text).unwrap();
            let msg = RawConfig::load(Some(&p), &env(&vars))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("[agency] domain"), "{msg}");
            for d in ["安全生产", "特种设备", "消防", "其他"] {
                assert!(msg.contains(d), "{msg} should list {d}");
            }
        }
        for (d, months) in [
            ("安全生产", 12),
            ("特种设备", 12),
            ("消防", 12),
            ("其他", 3),
        ] {
            std::fs::write(&p, format!("[agency]\ndomain = \"{d}\"\n")).unwrap();
            let (raw, _) = RawConfig::load(Some(&p), &[]).unwrap();
            assert_eq!(raw.mapping_context().display.min_months, months, "{d}");
        }
        std::fs::write(&p, "").unwrap();
        let (raw, _) = RawConfig::load(Some(&p), &[]).unwrap();
        assert_eq!(
            raw.mapping_context().display.min_months,
            3,
            "no domain is 其他"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let base = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dualpub.example.toml"),
        )
        .unwrap();
        let e = env(&[
            ("DUALPUB_SOURCE_TOKEN", "t"),
            ("DUALPUB_PLATFORM_SECRET", "s"),
        ]);
        let cases = [
            (
                base.replace("batch_size = 200", "batch_size = 900"),
                "batch_size",
            ),
            (
                base.replace("concurrency = 4", "concurency = 4"),
                "concurency",
            ),
            (
                base.replace("token_env = \"DUALPUB_SOURCE_TOKEN\"", "token = \"abc\""),
                "must not be written in the file",
            ),
            (
                base.replace(
                    "credit_code = \"11410000000012343F\"",
                    "credit_code = \"11410000000012343A\"",
                ),
                "credit_code",
            ),
            (
                base.replace("url = \"http://127.0.0.1:8702\"", "url = \"ftp://x\""),
                "[platform] url",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&p, &text).unwrap();
            let r =
                RawConfig::load(Some(&p), &e).and_then(|(raw, o)| Config::from_raw(&raw, &o, &e));
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains(want), "{msg} should name {want}");
            assert!(msg.contains("c.toml"), "{msg} should name the file");
        }
        let r = RawConfig::load(None, &env(&[("DUALPUB_PLATFORM_BATCHSIZE", "3")]));
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("DUALPUB_PLATFORM_BATCHSIZE"));
        let r = RawConfig::load(None, &env(&[("DUALPUB_PLATFORM_BATCH_SIZE", "many")]));
        assert!(r.unwrap_err().to_string().contains("not a whole number"));
        // a missing secret variable
        std::fs::write(&p, &base).unwrap();
        let (raw, o) = RawConfig::load(Some(&p), &[]).unwrap();
        let msg = Config::from_raw(&raw, &o, &[]).unwrap_err().to_string();
        assert!(msg.contains("DUALPUB_SOURCE_TOKEN"), "{msg}");
    }

    #[test]
    fn a_missing_file_says_why_once() {
        let err = RawConfig::load(Some(Path::new("/nonexistent/dualpub.toml")), &[]).unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert!(shown.contains("/nonexistent/dualpub.toml"), "{shown}");
        assert_eq!(shown.matches("os error 2").count(), 1, "{shown}");
    }

    fn example() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dualpub.example.toml"))
            .unwrap()
    }

    fn secrets() -> Vec<(String, String)> {
        env(&[
            ("DUALPUB_SOURCE_TOKEN", "t"),
            ("DUALPUB_PLATFORM_SECRET", "s"),
        ])
    }

    /// Loads and checks `text` as the file `c.toml` with the environment `e`; the error message.
    fn error_of(text: &str, e: &[(String, String)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let r = RawConfig::load(Some(&p), e).and_then(|(raw, o)| Config::from_raw(&raw, &o, e));
        r.unwrap_err().to_string()
    }

    #[test]
    fn key_messages_have_no_stray_bracket() {
        let msg = error_of(
            &example().replace("batch_size = 200", "batch_size = 900"),
            &secrets(),
        );
        assert!(
            msg.contains("[platform] batch_size: 900 is outside"),
            "{msg}"
        );
        assert!(!msg.contains("]:"), "{msg}");
        let msg = error_of(
            &example().replace("[store]\npath = ", "[store]\n# path = "),
            &secrets(),
        );
        assert!(msg.contains("[store] path: is missing"), "{msg}");
    }

    /// The 1-based number of the line of `text` that contains `needle`.
    fn line_with(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn wrong_types_and_unknown_keys_in_the_file_name_the_section_key_and_line() {
        let base = example();
        let cases = [
            (
                base.replace("batch_size = 200", "batch_size = \"200\""),
                "batch_size = \"200\"",
                "[platform] batch_size",
                "expected u32",
            ),
            (
                base.replace("path = \"/var/lib/dualpub\"", "path = 5"),
                "path = 5",
                "[store] path",
                "integer",
            ),
            (
                base.replace(
                    "# timeout_secs = 30               # per request",
                    "timeout_secs = \"30s\"",
                ),
                "timeout_secs = \"30s\"",
                "[platform] timeout_secs",
                "expected u64",
            ),
            (
                base.replace("concurrency = 4", "batchsize = 3"),
                "batchsize = 3",
                "[platform] batchsize",
                "unknown key",
            ),
            (
                base.replace("[store]", "[stores]"),
                "[stores]",
                "[stores]",
                "unknown section",
            ),
        ];
        for (text, line_text, key, problem) in cases {
            let msg = error_of(&text, &secrets());
            let line = line_with(&text, line_text);
            assert!(
                msg.contains(&format!("c.toml: line {line}: {key}")),
                "{msg} should name the file, line {line} and {key}"
            );
            assert!(msg.contains(problem), "{msg} should say {problem}");
        }
    }

    #[test]
    fn a_bad_override_names_the_environment_variable_not_the_file() {
        let base = example();
        for (var, value, key) in [
            (
                "DUALPUB_PLATFORM_CONCURRENCY",
                "-3",
                "[platform] concurrency",
            ),
            (
                "DUALPUB_PLATFORM_BATCH_SIZE",
                "9999",
                "[platform] batch_size",
            ),
            ("DUALPUB_SOURCE_TIMEOUT_SECS", "0", "[source] timeout_secs"),
            ("DUALPUB_PLATFORM_URL", "ftp://x", "[platform] url"),
            // a window reaching before year 1: the source refused `since`, and the message blamed [source] url
            (
                "DUALPUB_SYNC_OVERLAP_MINUTES",
                "4294967295",
                "[sync] overlap_minutes",
            ),
        ] {
            let mut e = secrets();
            e.push((var.to_string(), value.to_string()));
            let msg = error_of(&base, &e);
            assert!(
                msg.starts_with(&format!("environment variable {var} ")),
                "{msg} should blame {var}"
            );
            assert!(msg.contains(key), "{msg} should name {key}");
            assert!(msg.contains(value), "{msg} should show the value {value}");
        }
    }

    #[test]
    fn a_secret_variable_named_by_an_env_key_is_not_an_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            example().replace(
                "secret_env = \"DUALPUB_PLATFORM_SECRET\"",
                "secret_env = \"DUALPUB_PLATFORM_PASSWORD\"",
            ),
        )
        .unwrap();
        let e = env(&[
            ("DUALPUB_SOURCE_TOKEN", "t"),
            ("DUALPUB_PLATFORM_PASSWORD", "pw"),
        ]);
        let (raw, o) = RawConfig::load(Some(&p), &e).unwrap();
        let cfg = Config::from_raw(&raw, &o, &e).unwrap();
        assert_eq!(cfg.platform_secret.expose(), "pw");
        // also when the reference itself comes from an override
        let e = env(&[
            ("DUALPUB_SOURCE_TOKEN_ENV", "DUALPUB_SOURCE_KEY"),
            ("DUALPUB_SOURCE_KEY", "k"),
            ("DUALPUB_PLATFORM_PASSWORD", "pw"),
        ]);
        let (raw, o) = RawConfig::load(Some(&p), &e).unwrap();
        let cfg = Config::from_raw(&raw, &o, &e).unwrap();
        assert_eq!(cfg.source_token.expose(), "k");
        // a variable nothing refers to is still a mistyped override
        let mut e = e;
        e.push(("DUALPUB_PLATFORM_PASSWORDS".into(), "x".into()));
        let msg = RawConfig::load(Some(&p), &e).unwrap_err().to_string();
        assert!(msg.contains("DUALPUB_PLATFORM_PASSWORDS"), "{msg}");
    }

    #[test]
    fn a_bad_log_level_in_the_file_is_refused() {
        let text = example().replace(
            "# [log]\n# format = \"text\"                 # or \"json\"\n# level",
            "[log]\nlevel",
        );
        assert!(
            text.contains("[log]\nlevel = \"warn\""),
            "the example's [log] section moved"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, &text).unwrap();
        let (raw, o) = RawConfig::load(Some(&p), &secrets()).unwrap();
        Config::from_raw(&raw, &o, &secrets()).unwrap();
        let msg = error_of(
            &text.replace("level = \"warn\"", "level = \"verbose\""),
            &secrets(),
        );
        assert!(msg.contains("c.toml"), "{msg}");
        assert!(msg.contains("[log] level"), "{msg}");
        assert!(msg.contains("verbose"), "{msg}");
        let mut e = secrets();
        e.push(("DUALPUB_LOG_LEVEL".into(), "loud".into()));
        let msg = error_of(&text, &e);
        assert!(
            msg.starts_with("environment variable DUALPUB_LOG_LEVEL "),
            "{msg}"
        );
    }

    #[test]
    fn log_filters_accept_levels_and_directives_and_refuse_the_rest() {
        for ok in [
            "debug",
            "INFO",
            " warn ",
            "off",
            "dualpub=debug",
            "dualpub=debug,hyper=warn",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok} should be accepted");
        }
        assert_eq!(log_filter("debug").unwrap(), "dualpub=debug");
        assert_eq!(
            log_filter("dualpub=debug,hyper=warn").unwrap(),
            "dualpub=debug,hyper=warn"
        );
        for bad in ["verbose", "", "dualpub=verbose", "dualpub=debug,hyper=loud"] {
            assert!(log_filter(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn an_empty_store_path_is_refused() {
        // (sled would quietly put the store in the working directory)
        let msg = error_of(
            &example().replace("path = \"/var/lib/dualpub\"", "path = \"  \""),
            &secrets(),
        );
        assert!(msg.contains("[store] path: is empty"), "{msg}");
        let mut e = secrets();
        e.push(("DUALPUB_STORE_PATH".into(), String::new()));
        let msg = error_of(&example(), &e);
        assert!(
            msg.starts_with("environment variable DUALPUB_STORE_PATH "),
            "{msg}"
        );
    }
}
