//! The UR's `engine.json`, read as-is and validated once into [`Engine`].
//!
//! Existing users migrate by pointing ur-train at the engine.json they have,
//! so every key the UR v0.7.3 understands is read here with the UR's
//! defaults, PIO-only keys (`sparkConf`, `engineFactory`, ...) are accepted,
//! unknown keys produce a warning, and a value of the wrong type or range is
//! an error naming the key (`algorithms[0].params.indicators[1].minLLR`).
//! Nothing downstream reads raw JSON.

use super::duration::{MAX_DURATION_SECS, parse_duration_secs};
use crate::model::json_kind;
use crate::time::{Millis, parse_iso8601};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// UR defaults (`DefaultURAlgoParams`).
pub const DEFAULT_MAX_EVENTS_PER_EVENT_TYPE: u32 = 500;
pub const DEFAULT_MAX_CORRELATORS_PER_EVENT_TYPE: u32 = 50;
pub const DEFAULT_BACKFILL_DURATION: &str = "3650 days";
pub const DEFAULT_RANK_FIELD: &str = "popRank";
pub const DEFAULT_MAX_QUERY_EVENTS: u32 = 100;

/// One indicator (event type) of the model; the first is primary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Indicator {
    /// Field name in the model.
    pub name: String,
    /// Event names counted as this indicator (`aliases`, else `[name]`).
    pub event_names: Vec<String>,
    /// Downsampling cap: items per user and users per item.
    pub max_items_per_user: u32,
    /// Top-K correlators kept per item.
    pub max_correlators_per_item: u32,
    /// Minimum LLR of a kept correlator.
    pub min_llr: Option<f64>,
    /// Most recent distinct items of a user kept for queries (the UR's
    /// per-indicator `maxItemsPerUser`; `maxQueryEvents`, default 100, in
    /// `eventNames` mode).
    pub history_cap: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RankingKind {
    Popular,
    Trending,
    Hot,
    Random,
    UserDefined,
}

impl RankingKind {
    fn parse(s: &str) -> Option<RankingKind> {
        Some(match s {
            "popular" => RankingKind::Popular,
            "trending" => RankingKind::Trending,
            "hot" => RankingKind::Hot,
            "random" => RankingKind::Random,
            "userDefined" => RankingKind::UserDefined,
            _ => return None,
        })
    }

    /// The UR's field name when a ranking has no `name` (`PopModel.nameByType`).
    fn default_field(self) -> &'static str {
        match self {
            RankingKind::Popular => "popRank",
            RankingKind::Trending => "trendRank",
            RankingKind::Hot => "hotRank",
            RankingKind::Random => "uniqueRank",
            RankingKind::UserDefined => "userRank",
        }
    }

    /// Number of time buckets counted for this kind.
    pub fn buckets(self) -> usize {
        match self {
            RankingKind::Popular => 1,
            RankingKind::Trending => 2,
            RankingKind::Hot => 3,
            RankingKind::Random | RankingKind::UserDefined => 0,
        }
    }
}

/// A ranking field (popularity backfill and sort order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ranking {
    pub name: String,
    pub kind: RankingKind,
    pub event_names: Vec<String>,
    pub duration_secs: i64,
    /// Window end; `None` means the run's clock (`--now`).
    pub offset_date: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RecsModel {
    /// Indicators, properties and rankings.
    All,
    /// Indicators only (the UR writes no properties or rankings then).
    CollabFiltering,
    /// Properties and rankings only.
    Backfill,
}

/// A query-time business rule from `fields`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldRule {
    pub name: String,
    pub values: Vec<String>,
    pub bias: f64,
}

/// Settings kept for the Elasticsearch and query side.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryParams {
    pub index_name: Option<String>,
    pub type_name: Option<String>,
    pub num: Option<u32>,
    pub blacklist_events: Option<Vec<String>>,
    pub max_query_events: Option<u32>,
    pub user_bias: Option<f64>,
    pub item_bias: Option<f64>,
    pub return_self: Option<bool>,
    pub fields: Vec<FieldRule>,
    pub available_date_name: Option<String>,
    pub expire_date_name: Option<String>,
    pub date_name: Option<String>,
    pub num_es_write_connections: Option<u32>,
}

/// The validated engine configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Engine {
    pub app_name: Option<String>,
    pub indicators: Vec<Indicator>,
    pub min_events_per_user: u32,
    pub rankings: Vec<Ranking>,
    pub seed: u64,
    pub recs_model: RecsModel,
    /// Only events newer than `now − event_window` are read (PIO `eventWindow.duration`).
    pub event_window_secs: Option<i64>,
    pub query: QueryParams,
}

/// An engine plus the warnings its file produced.
#[derive(Debug)]
pub struct Loaded {
    pub engine: Engine,
    pub warnings: Vec<String>,
}

impl Engine {
    /// Reads and validates an engine.json file.
    pub fn load(path: &std::path::Path) -> Result<Loaded, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read engine file {}: {e}", path.display()))?;
        Engine::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Loaded, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut r = Reader { warnings: Vec::new() };
        let engine = r.engine(&root)?;
        Ok(Loaded { engine, warnings: r.warnings })
    }

    /// The primary indicator.
    pub fn primary(&self) -> &Indicator {
        &self.indicators[0]
    }

    /// The date property names, for mappings and queries.
    pub fn date_names(&self) -> Vec<String> {
        let q = &self.query;
        let mut v: Vec<String> =
            [&q.date_name, &q.available_date_name, &q.expire_date_name].into_iter().flatten().cloned().collect();
        v.dedup();
        v
    }

    /// The largest downsampling cap, which bounds every count after sampling.
    pub fn max_cap(&self) -> u32 {
        self.indicators.iter().map(|i| i.max_items_per_user).max().unwrap_or(0)
    }
}

const PIO_TOP_KEYS: &[&str] =
    &["id", "description", "engineFactory", "comment", "sparkConf", "preparator", "serving", "evaluator", "version"];
const DATASOURCE_KEYS: &[&str] = &["name", "appName", "eventNames", "minEventsPerUser", "eventWindow", "comment"];
const ALGO_PARAM_KEYS: &[&str] = &[
    "appName",
    "indexName",
    "typeName",
    "recsModel",
    "eventNames",
    "blacklistEvents",
    "maxQueryEvents",
    "maxEventsPerEventType",
    "maxCorrelatorsPerEventType",
    "num",
    "userBias",
    "itemBias",
    "returnSelf",
    "fields",
    "rankings",
    "backfillField",
    "availableDateName",
    "expireDateName",
    "dateName",
    "indicators",
    "seed",
    "numESWriteConnections",
    "minEventsPerUser",
    "comment",
];

struct Reader {
    warnings: Vec<String>,
}

/// Where the algorithm parameters are, for messages.
const ALGO_PARAMS: &str = "algorithms[0].params";

/// What the model takes from `datasource.params`.
struct DataSource<'a> {
    params: &'a Obj,
    event_names: Option<Vec<String>>,
    min_events_per_user: Option<u32>,
    event_window_secs: Option<i64>,
}

type Obj = Map<String, Value>;

impl Reader {
    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn check_keys(&mut self, obj: &Obj, path: &str, known: &[&str]) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                self.warn(format!("unknown key {}{key} (ignored)", prefix(path)));
            }
        }
    }

    fn engine(&mut self, root: &Value) -> Result<Engine, String> {
        let root = object(root, "the top level")?;
        let mut top_known: Vec<&str> = PIO_TOP_KEYS.to_vec();
        top_known.extend(["datasource", "algorithms"]);
        self.check_keys(root, "", &top_known);

        let empty = Obj::new();
        let ds = self.datasource(root, &empty)?;
        let p = self.algorithm_params(root)?;
        let path = ALGO_PARAMS;
        let indicators = self.model_indicators(p, ds.event_names.as_deref())?;
        let min_events_per_user = match (ds.min_events_per_user, uint(p, "minEventsPerUser", path)?) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("minEventsPerUser is {a} in datasource.params but {b} in {path}; keep one"));
            }
            (a, b) => a.or(b).unwrap_or(1),
        };
        let rankings = self.model_rankings(p, &indicators[0].event_names)?;
        let recs_model = recs_model(p)?;
        let seed = seed(p)?;
        let app_name = string(p, "appName", path)?.or(string(ds.params, "appName", "datasource.params")?);
        let query = self.query_params(p)?;

        let event_window_secs = ds.event_window_secs;
        let engine =
            Engine { app_name, indicators, min_events_per_user, rankings, seed, recs_model, event_window_secs, query };
        self.check_field_clashes(&engine)?;
        Ok(engine)
    }

    /// `datasource.params` (`empty` when absent) and what the model takes from it.
    fn datasource<'a>(&mut self, root: &'a Obj, empty: &'a Obj) -> Result<DataSource<'a>, String> {
        let ds = match root.get("datasource") {
            None => empty,
            Some(v) => {
                let ds = object(v, "datasource")?;
                self.check_keys(ds, "datasource", &["params", "name", "comment"]);
                match ds.get("params") {
                    None => empty,
                    Some(p) => object(p, "datasource.params")?,
                }
            }
        };
        self.check_keys(ds, "datasource.params", DATASOURCE_KEYS);
        let event_names = string_list(ds, "eventNames", "datasource.params")?;
        let min_events_per_user = uint(ds, "minEventsPerUser", "datasource.params")?;
        let event_window_secs = match ds.get("eventWindow") {
            None | Some(Value::Null) => None,
            Some(v) => self.event_window(v)?,
        };
        Ok(DataSource { params: ds, event_names, min_events_per_user, event_window_secs })
    }

    /// `datasource.params.eventWindow`: its duration; the event store cleaning keys are PIO's.
    fn event_window(&mut self, v: &Value) -> Result<Option<i64>, String> {
        let w = object(v, "datasource.params.eventWindow")?;
        self.check_keys(w, "datasource.params.eventWindow", &["duration", "removeDuplicates", "compressProperties"]);
        for key in ["removeDuplicates", "compressProperties"] {
            if w.get(key) == Some(&Value::Bool(true)) {
                self.warn(format!(
                    "datasource.params.eventWindow.{key} cleans PIO's event store; ur-train reads files and does not apply it"
                ));
            }
        }
        duration(w, "duration", "datasource.params.eventWindow")
    }

    /// `algorithms[0].params`, the UR's algorithm parameters.
    fn algorithm_params<'a>(&mut self, root: &'a Obj) -> Result<&'a Obj, String> {
        let algos = root.get("algorithms").ok_or("missing key algorithms (the UR's algorithm parameters)")?;
        let algos = algos.as_array().ok_or("algorithms: expected an array")?;
        let algo = algos.first().ok_or("algorithms: expected one algorithm, found none")?;
        if algos.len() > 1 {
            self.warn(format!("algorithms has {} entries; only algorithms[0] is used", algos.len()));
        }
        let algo = object(algo, "algorithms[0]")?;
        self.check_keys(algo, "algorithms[0]", &["name", "params", "comment"]);
        let p = object(algo.get("params").ok_or("missing key algorithms[0].params")?, ALGO_PARAMS)?;
        self.check_keys(p, ALGO_PARAMS, ALGO_PARAM_KEYS);
        Ok(p)
    }

    /// The indicators, from `indicators` or from `eventNames` with the global
    /// caps, checked; `ds_event_names` (datasource.params) only warn.
    fn model_indicators(&mut self, p: &Obj, ds_event_names: Option<&[String]>) -> Result<Vec<Indicator>, String> {
        let path = ALGO_PARAMS;
        let max_events = uint(p, "maxEventsPerEventType", path)?.unwrap_or(DEFAULT_MAX_EVENTS_PER_EVENT_TYPE);
        let max_correlators =
            uint(p, "maxCorrelatorsPerEventType", path)?.unwrap_or(DEFAULT_MAX_CORRELATORS_PER_EVENT_TYPE);
        positive(max_events, &format!("{path}.maxEventsPerEventType"))?;
        positive(max_correlators, &format!("{path}.maxCorrelatorsPerEventType"))?;
        let algo_event_names = string_list(p, "eventNames", path)?;

        let indicators = match (p.get("indicators"), &algo_event_names) {
            (Some(v), names) if !v.is_null() => {
                let list = self.indicators(v, &format!("{path}.indicators"))?;
                if let Some(names) = names {
                    let declared: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
                    if names.iter().map(String::as_str).collect::<Vec<_>>() != declared {
                        self.warn(format!(
                            "{path} has both indicators and eventNames; the indicators are used (eventNames {names:?} ignored)"
                        ));
                    }
                }
                list
            }
            (_, Some(names)) => names
                .iter()
                .map(|n| Indicator {
                    name: n.clone(),
                    event_names: vec![n.clone()],
                    max_items_per_user: max_events,
                    max_correlators_per_item: max_correlators,
                    min_llr: None,
                    history_cap: uint(p, "maxQueryEvents", path).ok().flatten().unwrap_or(DEFAULT_MAX_QUERY_EVENTS),
                })
                .collect(),
            _ => {
                return Err(format!(
                    "{path} needs `indicators` or `eventNames`: the first names the primary event of the model"
                ));
            }
        };
        check_indicators(&indicators)?;
        if let Some(ds_names) = ds_event_names {
            let model: BTreeSet<&str> = indicators.iter().map(|i| i.name.as_str()).collect();
            let ds: BTreeSet<&str> = ds_names.iter().map(String::as_str).collect();
            if model != ds {
                self.warn(format!(
                    "datasource.params.eventNames {ds_names:?} differ from the indicators {:?}; the indicators are used",
                    model
                ));
            }
        }
        Ok(indicators)
    }

    /// The rankings: `rankings`, else `backfillField`, else popularity of the primary events.
    fn model_rankings(&mut self, p: &Obj, primary_events: &[String]) -> Result<Vec<Ranking>, String> {
        let path = ALGO_PARAMS;
        Ok(match (p.get("rankings"), p.get("backfillField")) {
            (Some(v), _) if !v.is_null() => self.rankings(v, &format!("{path}.rankings"), primary_events)?,
            (_, Some(v)) if !v.is_null() => {
                let backfill = self.ranking(v, &format!("{path}.backfillField"), primary_events, true)?;
                vec![backfill]
            }
            _ => vec![Ranking {
                name: DEFAULT_RANK_FIELD.into(),
                kind: RankingKind::Popular,
                event_names: primary_events.to_vec(),
                duration_secs: parse_duration_secs(DEFAULT_BACKFILL_DURATION)?,
                offset_date: None,
            }],
        })
    }

    /// The settings kept for Elasticsearch and queries.
    fn query_params(&mut self, p: &Obj) -> Result<QueryParams, String> {
        let path = ALGO_PARAMS;
        let fields = match p.get("fields") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => self.fields(v, &format!("{path}.fields"))?,
        };
        let query = QueryParams {
            index_name: string(p, "indexName", path)?,
            type_name: string(p, "typeName", path)?,
            num: uint(p, "num", path)?,
            blacklist_events: string_list(p, "blacklistEvents", path)?,
            max_query_events: uint(p, "maxQueryEvents", path)?,
            user_bias: number(p, "userBias", path)?,
            item_bias: number(p, "itemBias", path)?,
            return_self: boolean(p, "returnSelf", path)?,
            fields,
            available_date_name: string(p, "availableDateName", path)?,
            expire_date_name: string(p, "expireDateName", path)?,
            date_name: string(p, "dateName", path)?,
            num_es_write_connections: uint(p, "numESWriteConnections", path)?,
        };
        if let Some(n) = query.num_es_write_connections {
            positive(n, &format!("{path}.numESWriteConnections"))?;
        }
        Ok(query)
    }

    fn indicators(&mut self, v: &Value, path: &str) -> Result<Vec<Indicator>, String> {
        let list = v.as_array().ok_or_else(|| format!("{path}: expected an array"))?;
        let mut out = Vec::new();
        for (k, item) in list.iter().enumerate() {
            let path = format!("{path}[{k}]");
            let o = object(item, &path)?;
            self.check_keys(
                o,
                &path,
                &["name", "aliases", "maxItemsPerUser", "maxCorrelatorsPerItem", "minLLR", "comment"],
            );
            let name = string(o, "name", &path)?.ok_or_else(|| format!("{path}.name is missing"))?;
            if name.is_empty() {
                return Err(format!("{path}.name is empty"));
            }
            let event_names = match string_list(o, "aliases", &path)? {
                Some(a) if a.is_empty() => return Err(format!("{path}.aliases is empty")),
                Some(a) => a,
                None => vec![name.clone()],
            };
            let max_items_per_user = uint(o, "maxItemsPerUser", &path)?.unwrap_or(DEFAULT_MAX_EVENTS_PER_EVENT_TYPE);
            positive(max_items_per_user, &format!("{path}.maxItemsPerUser"))?;
            let max_correlators_per_item =
                uint(o, "maxCorrelatorsPerItem", &path)?.unwrap_or(DEFAULT_MAX_CORRELATORS_PER_EVENT_TYPE);
            positive(max_correlators_per_item, &format!("{path}.maxCorrelatorsPerItem"))?;
            let min_llr = number(o, "minLLR", &path)?;
            out.push(Indicator {
                name,
                event_names,
                max_items_per_user,
                max_correlators_per_item,
                min_llr,
                history_cap: max_items_per_user,
            });
        }
        Ok(out)
    }

    fn rankings(&mut self, v: &Value, path: &str, primary: &[String]) -> Result<Vec<Ranking>, String> {
        let list = v.as_array().ok_or_else(|| format!("{path}: expected an array"))?;
        let mut out: Vec<Ranking> = Vec::new();
        for (k, item) in list.iter().enumerate() {
            let r = self.ranking(item, &format!("{path}[{k}]"), primary, false)?;
            if out.iter().any(|o| o.name == r.name) {
                return Err(format!("{path}[{k}]: a second ranking named `{}`", r.name));
            }
            out.push(r);
        }
        Ok(out)
    }

    fn ranking(&mut self, v: &Value, path: &str, primary: &[String], backfill: bool) -> Result<Ranking, String> {
        let o = object(v, path)?;
        let type_key = if backfill { "backfillType" } else { "type" };
        self.check_keys(o, path, &["name", type_key, "eventNames", "duration", "offsetDate", "endDate", "comment"]);
        let kind = match string(o, type_key, path)? {
            None => RankingKind::Popular,
            Some(t) => RankingKind::parse(&t).ok_or_else(|| {
                format!("{path}.{type_key}: `{t}` is not one of popular, trending, hot, random, userDefined")
            })?,
        };
        let name = string(o, "name", path)?.unwrap_or_else(|| kind.default_field().to_string());
        let event_names = string_list(o, "eventNames", path)?.unwrap_or_else(|| primary.to_vec());
        let duration_secs = match duration(o, "duration", path)? {
            Some(d) => d,
            None => parse_duration_secs(DEFAULT_BACKFILL_DURATION)?,
        };
        let offset_date = match string(o, "offsetDate", path)? {
            None => None,
            Some(s) => Some(
                parse_iso8601(&s).ok_or_else(|| format!("{path}.offsetDate: `{s}` is not an ISO-8601 date-time"))?,
            ),
        };
        if o.contains_key("endDate") {
            self.warn(format!("{path}.endDate is not used by the UR (the window ends at offsetDate or now); ignored"));
        }
        Ok(Ranking { name, kind, event_names, duration_secs, offset_date })
    }

    fn fields(&mut self, v: &Value, path: &str) -> Result<Vec<FieldRule>, String> {
        let list = v.as_array().ok_or_else(|| format!("{path}: expected an array"))?;
        let mut out = Vec::new();
        for (k, item) in list.iter().enumerate() {
            let path = format!("{path}[{k}]");
            let o = object(item, &path)?;
            self.check_keys(o, &path, &["name", "values", "bias", "comment"]);
            out.push(FieldRule {
                name: string(o, "name", &path)?.ok_or_else(|| format!("{path}.name is missing"))?,
                values: string_list(o, "values", &path)?.unwrap_or_default(),
                bias: number(o, "bias", &path)?.ok_or_else(|| format!("{path}.bias is missing"))?,
            });
        }
        Ok(out)
    }

    fn check_field_clashes(&mut self, e: &Engine) -> Result<(), String> {
        for r in &e.rankings {
            if e.indicators.iter().any(|i| i.name == r.name) {
                return Err(format!("ranking `{}` has the name of an indicator field", r.name));
            }
        }
        Ok(())
    }
}

/// Indicators: at least one, distinct names, each event claimed once and none reserved.
fn check_indicators(indicators: &[Indicator]) -> Result<(), String> {
    let path = ALGO_PARAMS;
    if indicators.is_empty() {
        return Err(format!("{path}: the list of indicators (or eventNames) is empty"));
    }
    let mut seen = BTreeSet::new();
    for (k, ind) in indicators.iter().enumerate() {
        if !seen.insert(ind.name.as_str()) {
            return Err(format!("{path}.indicators[{k}].name: indicator `{}` appears twice", ind.name));
        }
    }
    let mut seen_events = BTreeSet::new();
    for ind in indicators {
        for e in &ind.event_names {
            if !seen_events.insert(e.as_str()) {
                return Err(format!("{path}: event `{e}` is claimed by two indicators"));
            }
            if e.starts_with('$') {
                return Err(format!("{path}: `{e}` is a reserved PIO event and cannot be an indicator"));
            }
        }
    }
    Ok(())
}

fn recs_model(p: &Obj) -> Result<RecsModel, String> {
    let path = ALGO_PARAMS;
    match string(p, "recsModel", path)?.as_deref() {
        None | Some("all") => Ok(RecsModel::All),
        Some("collabFiltering") => Ok(RecsModel::CollabFiltering),
        Some("backfill") => Ok(RecsModel::Backfill),
        Some(other) => Err(format!("{path}.recsModel: `{other}` is not one of all, collabFiltering, backfill")),
    }
}

fn seed(p: &Obj) -> Result<u64, String> {
    match p.get("seed") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default() as u64),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or_default()),
        Some(_) => Err(format!("{ALGO_PARAMS}.seed: expected an integer")),
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() { String::new() } else { format!("{path}.") }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Obj, String> {
    v.as_object().ok_or_else(|| format!("{path}: expected a JSON object"))
}

fn string(o: &Obj, key: &str, path: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{}{key}: expected a string, got {}", prefix(path), json_kind(other))),
    }
}

fn string_list(o: &Obj, key: &str, path: &str) -> Result<Option<Vec<String>>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("{}{key}[{k}]: expected a string, got {}", prefix(path), json_kind(other))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("{}{key}: expected an array of strings, got {}", prefix(path), json_kind(other))),
    }
}

fn uint(o: &Obj, key: &str, path: &str) -> Result<Option<u32>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| format!("{}{key}: expected a non-negative integer, got {n}", prefix(path))),
        Some(other) => Err(format!("{}{key}: expected an integer, got {}", prefix(path), json_kind(other))),
    }
}

fn number(o: &Obj, key: &str, path: &str) -> Result<Option<f64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!("{}{key}: expected a number, got {}", prefix(path), json_kind(other))),
    }
}

fn boolean(o: &Obj, key: &str, path: &str) -> Result<Option<bool>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{}{key}: expected true or false, got {}", prefix(path), json_kind(other))),
    }
}

fn duration(o: &Obj, key: &str, path: &str) -> Result<Option<i64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s > MAX_DURATION_SECS => Err(format!("{}{key}: duration {n} s is out of range", prefix(path))),
            Some(s) if s >= 0.0 => Ok(Some(s.trunc() as i64)),
            _ => Err(format!("{}{key}: expected a non-negative number of seconds, got {n}", prefix(path))),
        },
        Some(Value::String(s)) => parse_duration_secs(s).map(Some).map_err(|e| format!("{}{key}: {e}", prefix(path))),
        Some(other) => Err(format!("{}{key}: expected a duration, got {}", prefix(path), json_kind(other))),
    }
}

fn positive(v: u32, path: &str) -> Result<(), String> {
    if v == 0 { Err(format!("{path}: must be at least 1")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(params: &str) -> Result<Loaded, String> {
        Engine::from_json(&format!(r#"{{"algorithms":[{{"name":"ur","params":{params}}}]}}"#))
    }

    #[test]
    fn event_names_mode_uses_global_caps() {
        let e = load(r#"{"eventNames":["buy","view"],"maxEventsPerEventType":20,"maxCorrelatorsPerEventType":5}"#)
            .unwrap()
            .engine;
        assert_eq!(e.indicators.len(), 2);
        assert_eq!(e.indicators[1].max_items_per_user, 20);
        assert_eq!(e.indicators[1].max_correlators_per_item, 5);
        assert_eq!(e.rankings[0].name, "popRank");
        assert_eq!(e.rankings[0].event_names, vec!["buy".to_string()]);
        assert_eq!(e.min_events_per_user, 1);
    }

    #[test]
    fn indicators_mode_with_aliases_and_defaults() {
        let e = load(r#"{"indicators":[{"name":"buy","aliases":["buy","purchase"],"minLLR":1.5},{"name":"view","maxItemsPerUser":10}]}"#)
            .unwrap()
            .engine;
        assert_eq!(e.indicators[0].event_names, vec!["buy", "purchase"]);
        assert_eq!(e.indicators[0].min_llr, Some(1.5));
        assert_eq!(e.indicators[0].max_items_per_user, 500);
        assert_eq!(e.indicators[1].max_items_per_user, 10);
        assert_eq!(e.indicators[1].max_correlators_per_item, 50);
        assert_eq!(e.rankings[0].event_names, vec!["buy", "purchase"]);
    }

    #[test]
    fn errors_name_the_key() {
        let err = load(r#"{"indicators":[{"name":"buy"},{"name":"view","maxCorrelatorsPerItem":-3}]}"#).unwrap_err();
        assert!(err.contains("algorithms[0].params.indicators[1].maxCorrelatorsPerItem"), "{err}");
        let err = load(r#"{"eventNames":["a"],"rankings":[{"type":"weird"}]}"#).unwrap_err();
        assert!(err.contains("rankings[0].type"), "{err}");
        let err = load(r#"{"eventNames":["a"],"rankings":[{"type":"popular","duration":"ever"}]}"#).unwrap_err();
        assert!(err.contains("rankings[0].duration"), "{err}");
        // A number of seconds past any clock is refused, not wrapped around.
        for huge in ["1e300", "1e17"] {
            let text = format!(r#"{{"eventNames":["a"],"rankings":[{{"type":"popular","duration":{huge}}}]}}"#);
            let err = load(&text).unwrap_err();
            assert!(err.contains("rankings[0].duration") && err.contains("out of range"), "{err}");
        }
        let err = load(r#"{"eventNames":["a"],"recsModel":"some"}"#).unwrap_err();
        assert!(err.contains("recsModel"), "{err}");
        let err = load(r#"{"indexName":"x"}"#).unwrap_err();
        assert!(err.contains("indicators"), "{err}");
    }

    #[test]
    fn unknown_keys_warn() {
        let l = load(r#"{"eventNames":["a"],"frobnicate":1}"#).unwrap();
        assert!(l.warnings.iter().any(|w| w.contains("algorithms[0].params.frobnicate")), "{:?}", l.warnings);
    }

    #[test]
    fn ranking_defaults_and_durations() {
        let e = load(r#"{"eventNames":["a","b"],"rankings":[{"type":"hot","duration":259200},{"type":"trending","eventNames":["b"],"duration":"2 days","offsetDate":"2016-01-19T11:55:07Z"},{"name":"defaultRank","type":"userDefined"}]}"#)
            .unwrap()
            .engine;
        assert_eq!(e.rankings[0].name, "hotRank");
        assert_eq!(e.rankings[0].duration_secs, 259_200);
        assert_eq!(e.rankings[1].name, "trendRank");
        assert_eq!(e.rankings[1].duration_secs, 172_800);
        assert!(e.rankings[1].offset_date.is_some());
        assert_eq!(e.rankings[2].kind, RankingKind::UserDefined);
    }
}
