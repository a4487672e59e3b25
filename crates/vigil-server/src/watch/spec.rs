//! What a watch is told: `KIND:URL` from `--watch`/`VIGIL_WATCH`, or a `[[watch]]` table.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WatchError;

/// Whose `services` table a watch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    /// Cinder's `services` (`cinder.db.sqlalchemy.models.Service`): `deleted` is a Boolean.
    Cinder,
    /// Nova's `services` (`nova.db.main.models.Service`), in the API cell's or any cell's
    /// database: `deleted` is an integer (0, or the row's id once soft-deleted).
    Nova,
}

impl WatchKind {
    /// `cinder` or `nova`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Cinder => "cinder",
            WatchKind::Nova => "nova",
        }
    }

    /// Parses `cinder` or `nova` (exactly, lowercase).
    pub fn parse(text: &str) -> Option<WatchKind> {
        match text {
            "cinder" => Some(WatchKind::Cinder),
            "nova" => Some(WatchKind::Nova),
            _ => None,
        }
    }
}

impl fmt::Display for WatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which database a watch URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `mysql://` or `mariadb://`: MySQL and MariaDB.
    MySql,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://PATH` (a file opened read-only).
    Sqlite,
}

impl Engine {
    /// The engine of a URL, from its scheme.
    pub fn of_url(url: &str) -> Option<Engine> {
        let (scheme, _) = url.split_once("://")?;
        match scheme {
            "mysql" | "mariadb" => Some(Engine::MySql),
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "sqlite" => Some(Engine::Sqlite),
            _ => None,
        }
    }
}

/// One `[[watch]]` table, or one `--watch KIND:URL` with the defaults.
///
/// Durations are seconds, fractions allowed, as everywhere in Vigil's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// `cinder` or `nova`.
    pub kind: WatchKind,
    /// `mysql://USER:PASSWORD@HOST/DB`, `postgres://USER@HOST/DB` or `sqlite://PATH`.
    pub url: String,
    /// Shown as the watched services' `source`; default: [`WatchConfig::default_name`].
    #[serde(default)]
    pub name: Option<String>,
    /// Seconds between polls (default 2).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: f64,
    /// The `service_down_time` the watched OpenStack runs with, for its own verdict
    /// (`openstack_state`); unset: OpenStack's default, 60.
    #[serde(default)]
    pub service_down_time: Option<f64>,
    /// The `report_interval` the watched daemons run with; unset: read from `conf`, else
    /// inferred from the observed cadence (OpenStack's default is 10).
    #[serde(default)]
    pub report_interval: Option<f64>,
    /// A `cinder.conf` or `nova.conf` to read `report_interval` and `service_down_time` from
    /// (its `[DEFAULT]` section), for those the watch does not set itself. Read at start-up.
    #[serde(default)]
    pub conf: Option<std::path::PathBuf>,
}

fn default_poll_interval() -> f64 {
    WatchConfig::DEFAULT_POLL_INTERVAL
}

impl WatchConfig {
    /// Seconds between polls when the watch does not say.
    pub const DEFAULT_POLL_INTERVAL: f64 = 2.0;
    /// OpenStack's own default `service_down_time` (Cinder's and Nova's).
    pub const OPENSTACK_SERVICE_DOWN_TIME: f64 = 60.0;

    /// Parses a `--watch` value, `KIND:URL` (`cinder:mysql://root@db/cinder`,
    /// `nova:postgres://nova@db/nova_cell1`, `cinder:sqlite:///var/lib/cinder/cinder.db`), with
    /// every other setting at its default. A malformed value is one [`WatchError::Malformed`].
    pub fn parse(value: &str) -> Result<WatchConfig, WatchError> {
        let malformed = |reason: &str| WatchError::Malformed {
            value: redact_url(value),
            reason: reason.to_owned(),
        };
        let (kind, url) = value.split_once(':').ok_or_else(|| {
            malformed("expected KIND:URL, for example cinder:mysql://root@127.0.0.1/cinder")
        })?;
        let kind = WatchKind::parse(kind)
            .ok_or_else(|| malformed(&format!("unknown kind {kind:?}: expected cinder or nova")))?;
        let config = WatchConfig {
            kind,
            url: url.to_owned(),
            name: None,
            poll_interval: WatchConfig::DEFAULT_POLL_INTERVAL,
            service_down_time: None,
            report_interval: None,
            conf: None,
        };
        config.validate().map_err(|err| match err {
            WatchError::Malformed { reason, .. } => malformed(&reason),
            other => other,
        })?;
        Ok(config)
    }

    /// Rejects a watch that cannot work: an unknown URL scheme, a URL without a database, a
    /// name that is empty, or a non-positive or non-finite duration.
    pub fn validate(&self) -> Result<(), WatchError> {
        let malformed = |reason: String| WatchError::Malformed {
            value: format!("{}:{}", self.kind, redact_url(&self.url)),
            reason,
        };
        let engine = Engine::of_url(&self.url).ok_or_else(|| {
            malformed("the url must start with mysql://, mariadb://, postgres://, postgresql:// or sqlite://".into())
        })?;
        if database_name(engine, &self.url).is_none() {
            return Err(malformed(match engine {
                Engine::Sqlite => "the sqlite url names no file".into(),
                _ => "the url names no database (…/DATABASE)".into(),
            }));
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(malformed("the name is empty".into()));
            }
        }
        for (what, value) in [
            ("poll_interval", Some(self.poll_interval)),
            ("service_down_time", self.service_down_time),
            ("report_interval", self.report_interval),
        ] {
            if let Some(value) = value {
                if !(value.is_finite() && value > 0.0) {
                    return Err(malformed(format!(
                        "{what} must be a positive number of seconds, not {value}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The database engine of [`WatchConfig::url`] (call [`WatchConfig::validate`] first).
    pub fn engine(&self) -> Option<Engine> {
        Engine::of_url(&self.url)
    }

    /// The name in force: [`WatchConfig::name`], else [`WatchConfig::default_name`].
    pub fn name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.default_name(),
        }
    }

    /// `KIND/DATABASE`: `cinder/cinder`, `nova/nova_cell1`; for SQLite the file's stem.
    pub fn default_name(&self) -> String {
        let database = self
            .engine()
            .and_then(|engine| database_name(engine, &self.url))
            .unwrap_or_else(|| "unknown".into());
        format!("{}/{database}", self.kind)
    }

    /// [`WatchConfig::poll_interval`] as a duration.
    pub fn poll_every(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval)
    }

    /// The `service_down_time` of OpenStack's own verdict, as its API process uses it: the
    /// configured one (or 60); for Nova raised to `int(2.5 × report_interval)` when it is not
    /// above `report_interval` (the watch's, or Nova's default 10), as `nova-api` itself does.
    /// Cinder's API never raises it (see [`super::verdict`]).
    pub fn openstack_service_down_time(&self) -> f64 {
        let configured = self
            .service_down_time
            .unwrap_or(WatchConfig::OPENSTACK_SERVICE_DOWN_TIME);
        match self.kind {
            WatchKind::Cinder => configured,
            WatchKind::Nova => {
                let report_interval = self.report_interval.unwrap_or(10.0);
                super::verdict::rewritten_service_down_time(configured, report_interval)
                    .unwrap_or(configured)
            }
        }
    }

    /// This watch with `report_interval` and `service_down_time` read from [`WatchConfig::conf`]
    /// where the watch does not set them: the `[DEFAULT]` section of an oslo.config file, as
    /// the daemons read it. An unreadable file, or a value that is not a positive number, is
    /// [`WatchError::Malformed`].
    pub fn with_conf(mut self) -> Result<WatchConfig, WatchError> {
        let Some(path) = self.conf.clone() else {
            return Ok(self);
        };
        let malformed = |reason: String| WatchError::Malformed {
            value: format!("{}:{}", self.kind, redact_url(&self.url)),
            reason,
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| malformed(format!("cannot read conf {}: {e}", path.display())))?;
        let defaults = oslo_defaults(&text);
        for (key, slot) in [
            ("report_interval", &mut self.report_interval),
            ("service_down_time", &mut self.service_down_time),
        ] {
            if slot.is_some() {
                continue;
            }
            if let Some(value) = defaults.get(key) {
                let seconds: f64 = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| {
                        malformed(format!(
                            "{key} = {value:?} in {} is not a positive number of seconds",
                            path.display()
                        ))
                    })?;
                *slot = Some(seconds);
            }
        }
        Ok(self)
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// The `key = value` lines of the `[DEFAULT]` section of an oslo.config (INI) file; comments
/// (`#`, `;`) and other sections skipped, the last value of a key kept.
fn oslo_defaults(text: &str) -> std::collections::HashMap<String, String> {
    let mut values = std::collections::HashMap::new();
    let mut in_default = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_default = section.trim() == "DEFAULT";
            continue;
        }
        if let (true, Some((key, value))) = (in_default, line.split_once(['=', ':'])) {
            values.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    values
}

/// The database a URL names: the path's first segment without its query for servers, the
/// file's stem for SQLite.
fn database_name(engine: Engine, url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    match engine {
        Engine::Sqlite => {
            let file = rest.rsplit('/').next().unwrap_or("");
            let stem = file.split('.').next().unwrap_or("");
            (!stem.is_empty()).then(|| stem.to_owned())
        }
        Engine::MySql | Engine::Postgres => {
            let (_, path) = rest.split_once('/')?;
            let database = path.split('/').next().unwrap_or("");
            (!database.is_empty()).then(|| database.to_owned())
        }
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`; anything else unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_urls() {
        let c = WatchConfig::parse("cinder:mysql://root@127.0.0.1/cinder").unwrap();
        assert_eq!(c.kind, WatchKind::Cinder);
        assert_eq!(c.url, "mysql://root@127.0.0.1/cinder");
        assert_eq!(c.engine(), Some(Engine::MySql));
        assert_eq!(c.name(), "cinder/cinder");
        assert_eq!(c.poll_interval, 2.0);
        assert_eq!(c.openstack_service_down_time(), 60.0);

        let n =
            WatchConfig::parse("nova:postgres://nova@db:5432/nova_cell1?sslmode=disable").unwrap();
        assert_eq!(n.kind, WatchKind::Nova);
        assert_eq!(n.engine(), Some(Engine::Postgres));
        assert_eq!(n.name(), "nova/nova_cell1");

        let s = WatchConfig::parse("cinder:sqlite:///var/lib/cinder/cinder.sqlite").unwrap();
        assert_eq!(s.engine(), Some(Engine::Sqlite));
        assert_eq!(s.name(), "cinder/cinder");
    }

    #[test]
    fn malformed_values_are_one_clear_error() {
        for (value, needle) in [
            ("cinder", "expected KIND:URL"),
            ("glance:mysql://root@h/glance", "unknown kind \"glance\""),
            ("Cinder:mysql://root@h/cinder", "unknown kind"),
            ("cinder:http://h/cinder", "must start with mysql://"),
            ("cinder:mysql://root@h", "names no database"),
            ("cinder:mysql://root@h/", "names no database"),
            ("nova:sqlite://", "names no file"),
            ("", "expected KIND:URL"),
        ] {
            let err = WatchConfig::parse(value).unwrap_err();
            assert!(
                matches!(err, WatchError::Malformed { .. }),
                "{value}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(needle), "{value}: {text}");
            assert!(text.starts_with("malformed watch"), "{text}");
        }
    }

    #[test]
    fn passwords_never_shown() {
        let err = WatchConfig::parse("glance:mysql://cinder:s3cret@db/cinder").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert_eq!(
            redact_url("mysql://cinder:s3cret@db:3306/cinder?x=1"),
            "mysql://cinder:***@db:3306/cinder?x=1"
        );
        assert_eq!(
            redact_url("postgres://nova@db/nova"),
            "postgres://nova@db/nova"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[test]
    fn watch_tables() {
        #[derive(Deserialize)]
        struct File {
            watch: Vec<WatchConfig>,
        }
        let file: File = toml::from_str(
            r#"
            [[watch]]
            kind = "cinder"
            url = "mysql://root@127.0.0.1/cinder"

            [[watch]]
            kind = "nova"
            url = "postgres://nova@127.0.0.1/nova_cell1"
            name = "region-b cell1"
            poll_interval = 0.5
            service_down_time = 10
            report_interval = 2
            "#,
        )
        .unwrap();
        assert_eq!(file.watch.len(), 2);
        assert_eq!(file.watch[0].name(), "cinder/cinder");
        assert_eq!(file.watch[0].poll_interval, 2.0);
        assert_eq!(file.watch[1].name(), "region-b cell1");
        assert_eq!(file.watch[1].poll_every(), Duration::from_millis(500));
        assert_eq!(file.watch[1].openstack_service_down_time(), 10.0);
        assert_eq!(file.watch[1].report_interval, Some(2.0));
        // nova-api raises a service_down_time not above report_interval; cinder-api does not
        let mut low = file.watch[1].clone();
        low.service_down_time = Some(5.0);
        low.report_interval = Some(10.0);
        assert_eq!(low.openstack_service_down_time(), 25.0);
        low.kind = WatchKind::Cinder;
        assert_eq!(low.openstack_service_down_time(), 5.0);
        for w in &file.watch {
            w.validate().unwrap();
        }

        let unknown = toml::from_str::<File>(
            "[[watch]]\nkind = \"cinder\"\nurl = \"mysql://h/c\"\npoll = 1\n",
        );
        assert!(unknown.is_err());
        let bad_kind =
            toml::from_str::<File>("[[watch]]\nkind = \"swift\"\nurl = \"mysql://h/c\"\n");
        assert!(bad_kind.is_err());
        let zero = WatchConfig {
            conf: None,
            poll_interval: 0.0,
            ..file.watch[0].clone()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("poll_interval"));
    }

    #[test]
    fn intervals_come_from_the_daemons_conf_unless_the_watch_sets_them() {
        let dir = std::env::temp_dir().join(format!("vigil-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("cinder.conf");
        std::fs::write(
            &conf,
            "# cinder.conf\n[DEFAULT]\nreport_interval = 20\n; service_down_time = 1\n\
             service_down_time=45\n[database]\nreport_interval = 99\n",
        )
        .unwrap();
        let mut watch = WatchConfig::parse("cinder:mysql://root@db/cinder").unwrap();
        watch.conf = Some(conf.clone());
        let read = watch.clone().with_conf().unwrap();
        assert_eq!(
            (read.report_interval, read.service_down_time),
            (Some(20.0), Some(45.0))
        );
        watch.report_interval = Some(5.0);
        assert_eq!(
            watch.clone().with_conf().unwrap().report_interval,
            Some(5.0)
        );
        std::fs::write(&conf, "[DEFAULT]\nreport_interval = soon\n").unwrap();
        // A value the watch sets itself is not read from the file at all.
        assert!(watch.clone().with_conf().is_ok());
        watch.report_interval = None;
        let err = watch.clone().with_conf().unwrap_err().to_string();
        assert!(err.contains("report_interval = \"soon\""), "{err}");
        watch.conf = Some(dir.join("missing.conf"));
        let err = watch.with_conf().unwrap_err().to_string();
        assert!(err.contains("cannot read conf"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
