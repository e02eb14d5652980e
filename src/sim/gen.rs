//! The deterministic record generator behind the enforcement-system simulator.
//!
//! Record *i* of a kind is a pure function of `(seed, kind, i)`: every choice is a splitmix64 hash of those three
//! numbers and a purpose, so nothing is stored and a million records cost no memory. Permits have indices
//! `0..ceil(N/2)` and ids `XK-00000001`…, penalties `0..floor(N/2)` and ids `CF-00000001`… (index + 1, eight
//! digits, so string order is index order).
//!
//! Timestamps grow with the index: groups of `tie_size` consecutive records share one `updated_at`, groups are
//! spread evenly over 2024-01-02T08:00+08:00 … 2026-10-30T18:00+08:00. A "late" record (see
//! [`is_late`]) is the exception: it was committed by a slow transaction, so its `updated_at` lies 1–120 s before
//! its successor's, and the simulator shows it only once the successor has been served.
//!
//! Content is realistic for a work-safety agency (河南省应急管理厅 and its city bureaus): companies, sole traders
//! and natural persons with valid USCCs and ID numbers, permits for hazardous chemicals, mines and fireworks,
//! penalties under the Work Safety Law. A chosen share of records carries exactly one [`Defect`], which the
//! connector's validation must report with [`Defect::code`]; every other record is valid.

use super::format_ts;
use crate::model::Kind;
use crate::source_schema::{Authority, LegalRep, Party, SourceRecord};
use chrono::{DateTime, Datelike, Days, Months, NaiveDate};

/// First generated `updated_at`: 2024-01-02T08:00:00+08:00.
pub const START_MILLIS: i64 = 1_704_153_600_000;
/// Generated `updated_at` values stay below 2026-10-30T18:00:00+08:00.
pub const END_MILLIS: i64 = 1_793_354_400_000;
/// The largest `records` the eight-digit ids allow per kind, times two.
pub const MAX_RECORDS: u64 = 2 * 99_999_999;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Records of both kinds together: permits get `ceil(N/2)`, penalties `floor(N/2)`.
    pub records: u64,
    pub seed: u64,
    /// Share of records (0..=1) that carry exactly one [`Defect`].
    pub invalid_rate: f64,
    /// How many consecutive records share one `updated_at` (1 = none share).
    pub tie_size: u32,
    /// Share of records (0..=1) committed late; see [`is_late`].
    pub late_commit_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            records: 1000,
            seed: 1,
            invalid_rate: 0.0,
            tie_size: 1,
            late_commit_rate: 0.0,
        }
    }
}

/// A generator setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenConfigError {
    #[error("{name} must be a share between 0 and 1, got {value}")]
    Rate { name: &'static str, value: f64 },
    #[error("tie size must be at least 1")]
    TieSize,
    #[error("at most {MAX_RECORDS} records can be generated, got {0}")]
    TooMany(u64),
}

impl GenConfig {
    /// How many records of `kind` are generated.
    pub fn count(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Permit => self.records.div_ceil(2),
            Kind::Penalty => self.records / 2,
        }
    }

    pub fn validate(&self) -> Result<(), GenConfigError> {
        for (name, value) in [
            ("invalid rate", self.invalid_rate),
            ("late-commit rate", self.late_commit_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(GenConfigError::Rate { name, value });
            }
        }
        if self.tie_size == 0 {
            return Err(GenConfigError::TieSize);
        }
        if self.records > MAX_RECORDS {
            return Err(GenConfigError::TooMany(self.records));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Hashing: every choice is hash(seed, kind, i, purpose).

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const P_TS: u64 = 1;
const P_LATE: u64 = 2;
const P_LATE_DELTA: u64 = 3;
const P_DEFECT: u64 = 4;
const P_DEFECT_KIND: u64 = 5;
const P_CONTENT: u64 = 6;
const AUTHORITY_SALT: u64 = 0x00A6_E9C7_0000_0000;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, kind: Kind, i: u64, purpose: u64) -> u64 {
    let tag = match kind {
        Kind::Permit => 0x5045_524D_4954,
        Kind::Penalty => 0x5045_4E41_4C54,
    };
    mix(mix(mix(mix(seed) ^ tag) ^ i) ^ purpose)
}

/// A hash as a share in `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A counter-based stream of hashes for one record's content: still a pure function of (seed, kind, i).
struct Draw {
    base: u64,
    n: u64,
}

impl Draw {
    fn new(cfg: &GenConfig, kind: Kind, i: u64) -> Draw {
        Draw {
            base: hash(cfg.seed, kind, i, P_CONTENT),
            n: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.n += 1;
        mix(self.base ^ self.n.wrapping_mul(GOLDEN))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        unit(self.next()) < p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Ids and timestamps.

/// The generated id of record `i` of `kind`: `XK-00000001` / `CF-00000001`.
pub fn id(kind: Kind, i: u64) -> String {
    match kind {
        Kind::Permit => format!("XK-{:08}", i + 1),
        Kind::Penalty => format!("CF-{:08}", i + 1),
    }
}

/// The kind and index of a generated id, when `id` names a record this configuration generates.
pub fn generated_index(cfg: &GenConfig, id: &str) -> Option<(Kind, u64)> {
    let (kind, digits) = if let Some(d) = id.strip_prefix("XK-") {
        (Kind::Permit, d)
    } else {
        (Kind::Penalty, id.strip_prefix("CF-")?)
    };
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n >= 1 && n <= cfg.count(kind)).then(|| (kind, n - 1))
}

/// The on-time timestamp of record `i`: its tie group's slot plus a hashed offset inside the slot.
fn base_millis(cfg: &GenConfig, kind: Kind, i: u64) -> i64 {
    let tie = u64::from(cfg.tie_size.max(1));
    let groups = cfg.count(kind).div_ceil(tie).max(1);
    let group = i / tie;
    let span = (END_MILLIS - START_MILLIS) as u64;
    let slot = (span / groups).max(1);
    let offset = hash(cfg.seed, kind, group, P_TS) % slot;
    START_MILLIS + (group * slot + offset) as i64
}

fn raw_late(cfg: &GenConfig, kind: Kind, i: u64) -> bool {
    cfg.late_commit_rate > 0.0 && unit(hash(cfg.seed, kind, i, P_LATE)) < cfg.late_commit_rate
}

/// Whether record `i` is committed late: the simulator hides it until its successor has been served, then shows
/// it with its own, slightly older `updated_at`. Never the first or last record, and never two in a row (so the
/// successor is always on time; the share is therefore about `L·(1−L)` for a rate `L`).
pub fn is_late(cfg: &GenConfig, kind: Kind, i: u64) -> bool {
    i > 0 && i + 1 < cfg.count(kind) && raw_late(cfg, kind, i) && !raw_late(cfg, kind, i + 1)
}

/// `updated_at` of record `i` in epoch milliseconds; non-decreasing in `i`.
pub fn updated_at_millis(cfg: &GenConfig, kind: Kind, i: u64) -> i64 {
    let base = base_millis(cfg, kind, i);
    if !is_late(cfg, kind, i) {
        return base;
    }
    let delta = 1_000 + (hash(cfg.seed, kind, i, P_LATE_DELTA) % 119_000) as i64;
    base.max(base_millis(cfg, kind, i + 1) - delta)
}

/// The first index whose `(updated_at, id)` is after `(since_millis, after_id)`; `count(kind)` when none is.
/// A binary search over the pure timestamp function: O(log N), nothing built.
pub fn index_after(cfg: &GenConfig, kind: Kind, since_millis: i64, after_id: &str) -> u64 {
    let (mut lo, mut hi) = (0, cfg.count(kind));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let t = updated_at_millis(cfg, kind, mid);
        if t > since_millis || (t == since_millis && id(kind, mid).as_str() > after_id) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

// ---------------------------------------------------------------------------------------------------------------
// Defects.

/// The one thing wrong with an invalid generated record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Defect {
    /// The party's USCC has a wrong check character.
    UsccCheck,
    /// The party's name is an empty string.
    MissingName,
    /// `decided_on` is a date that does not exist, like `2023-02-30`.
    DateInvalid,
    /// A penalty with 罚款 has `fine_yuan` `-500`.
    AmountNegative,
    /// `content` is 3000 characters (the limit is 2000).
    TooLong,
    /// `facts` (penalty) or `content` (permit) holds a character XML 1.0 forbids.
    XmlChar,
    /// A natural person's ID number has a wrong check character.
    IdCheck,
}

impl Defect {
    pub const ALL: [Defect; 7] = [
        Defect::UsccCheck,
        Defect::MissingName,
        Defect::DateInvalid,
        Defect::AmountNegative,
        Defect::TooLong,
        Defect::XmlChar,
        Defect::IdCheck,
    ];
    const PERMIT: [Defect; 6] = [
        Defect::UsccCheck,
        Defect::MissingName,
        Defect::DateInvalid,
        Defect::TooLong,
        Defect::XmlChar,
        Defect::IdCheck,
    ];

    /// The validation finding code the connector reports for this defect (a contract with `validate`).
    pub fn code(&self) -> &'static str {
        match self {
            Defect::UsccCheck => "uscc_check",
            Defect::MissingName => "required",
            Defect::DateInvalid => "date_invalid",
            Defect::AmountNegative => "amount_negative",
            Defect::TooLong => "too_long",
            Defect::XmlChar => "xml_char",
            Defect::IdCheck => "id_check",
        }
    }
}

/// The defect record `i` carries, if it is one of the `invalid_rate` share of invalid records.
pub fn defect(cfg: &GenConfig, kind: Kind, i: u64) -> Option<Defect> {
    if cfg.invalid_rate <= 0.0 || unit(hash(cfg.seed, kind, i, P_DEFECT)) >= cfg.invalid_rate {
        return None;
    }
    let options: &[Defect] = match kind {
        Kind::Permit => &Defect::PERMIT,
        Kind::Penalty => &Defect::ALL,
    };
    let pick = hash(cfg.seed, kind, i, P_DEFECT_KIND) % options.len() as u64;
    Some(options[pick as usize])
}

// ---------------------------------------------------------------------------------------------------------------
// Check characters (reference §4), from the ids module.

use crate::ids::{
    id_check_char as id_check, org_code_check_char as org_code_check,
    uscc_check_char as uscc_check, USCC_ALPHABET,
};

/// 工商注册号 check digit (ISO 7064 MOD 11,10) for 14 digits.
fn reg_no_check(first14: &str) -> char {
    let mut p = 10u32;
    for c in first14.bytes() {
        let mut s = (p + u32::from(c - b'0')) % 10;
        if s == 0 {
            s = 10;
        }
        p = (s * 2) % 11;
    }
    char::from(b'0' + ((11 - p) % 10) as u8)
}

/// A different character of `alphabet` than `right`: a wrong check character.
fn wrong_char(alphabet: &[u8], right: char, h: u64) -> char {
    let pos = alphabet
        .iter()
        .position(|&a| a as char == right)
        .unwrap_or(0);
    let shift = 1 + (h % (alphabet.len() as u64 - 1)) as usize;
    alphabet[(pos + shift) % alphabet.len()] as char
}

// ---------------------------------------------------------------------------------------------------------------
// Places and authorities.

struct City {
    name: &'static str,
    short: &'static str,
    /// The abbreviation in penalty document numbers (郑应急罚…).
    doc: &'static str,
    code: &'static str,
    districts: &'static [(&'static str, &'static str)],
}

const CITIES: &[City] = &[
    City {
        name: "郑州市",
        short: "郑州",
        doc: "郑",
        code: "410100",
        districts: &[
            ("410102", "中原区"),
            ("410103", "二七区"),
            ("410104", "管城回族区"),
            ("410105", "金水区"),
            ("410122", "中牟县"),
            ("410181", "巩义市"),
            ("410183", "新密市"),
            ("410185", "登封市"),
        ],
    },
    City {
        name: "开封市",
        short: "开封",
        doc: "汴",
        code: "410200",
        districts: &[
            ("410202", "龙亭区"),
            ("410203", "顺河回族区"),
            ("410221", "杞县"),
            ("410225", "兰考县"),
        ],
    },
    City {
        name: "洛阳市",
        short: "洛阳",
        doc: "洛",
        code: "410300",
        districts: &[
            ("410302", "老城区"),
            ("410305", "涧西区"),
            ("410323", "新安县"),
            ("410324", "栾川县"),
            ("410327", "宜阳县"),
            ("410329", "伊川县"),
        ],
    },
    City {
        name: "平顶山市",
        short: "平顶山",
        doc: "平",
        code: "410400",
        districts: &[
            ("410402", "新华区"),
            ("410403", "卫东区"),
            ("410422", "叶县"),
            ("410423", "鲁山县"),
            ("410482", "汝州市"),
        ],
    },
    City {
        name: "安阳市",
        short: "安阳",
        doc: "安",
        code: "410500",
        districts: &[
            ("410502", "文峰区"),
            ("410503", "北关区"),
            ("410522", "安阳县"),
            ("410581", "林州市"),
        ],
    },
    City {
        name: "新乡市",
        short: "新乡",
        doc: "新",
        code: "410700",
        districts: &[
            ("410702", "红旗区"),
            ("410711", "牧野区"),
            ("410721", "新乡县"),
            ("410782", "辉县市"),
        ],
    },
    City {
        name: "焦作市",
        short: "焦作",
        doc: "焦",
        code: "410800",
        districts: &[
            ("410802", "解放区"),
            ("410811", "山阳区"),
            ("410822", "博爱县"),
            ("410882", "沁阳市"),
        ],
    },
    City {
        name: "濮阳市",
        short: "濮阳",
        doc: "濮",
        code: "410900",
        districts: &[
            ("410902", "华龙区"),
            ("410922", "清丰县"),
            ("410928", "濮阳县"),
        ],
    },
    City {
        name: "许昌市",
        short: "许昌",
        doc: "许",
        code: "411000",
        districts: &[
            ("411002", "魏都区"),
            ("411003", "建安区"),
            ("411081", "禹州市"),
            ("411082", "长葛市"),
        ],
    },
    City {
        name: "三门峡市",
        short: "三门峡",
        doc: "三",
        code: "411200",
        districts: &[
            ("411202", "湖滨区"),
            ("411221", "渑池县"),
            ("411282", "灵宝市"),
        ],
    },
    City {
        name: "南阳市",
        short: "南阳",
        doc: "宛",
        code: "411300",
        districts: &[
            ("411302", "宛城区"),
            ("411303", "卧龙区"),
            ("411323", "西峡县"),
            ("411381", "邓州市"),
        ],
    },
    City {
        name: "商丘市",
        short: "商丘",
        doc: "商",
        code: "411400",
        districts: &[
            ("411402", "梁园区"),
            ("411403", "睢阳区"),
            ("411481", "永城市"),
        ],
    },
];

/// The data source unit the simulated system belongs to.
pub const AGENCY_NAME: &str = "河南省应急管理厅";

/// A government organ's USCC (`11` + area + organisation code + check), fixed per authority and seed-free.
fn organ_uscc(area: &str, salt: u64) -> String {
    let body = format!("{:08}", mix(AUTHORITY_SALT ^ salt) % 100_000_000);
    let org = format!("{body}{}", org_code_check(&body).expect("eight digits"));
    let first17 = format!("11{area}{org}");
    let check = uscc_check(&first17).expect("digits and check characters are in the USCC alphabet");
    format!("{first17}{check}")
}

/// 河南省应急管理厅 with its (simulated) USCC: the agency a demo configuration names as `[agency]`.
pub fn agency() -> Authority {
    Authority {
        name: Some(AGENCY_NAME.to_string()),
        credit_code: Some(organ_uscc("410000", 0)),
    }
}

/// The provincial department (`None`) or a city bureau.
fn authority(city: Option<&City>) -> (Authority, &'static str) {
    match city {
        None => (agency(), "豫"),
        Some(c) => {
            let salt = CITIES.iter().position(|x| x.code == c.code).unwrap_or(0) as u64 + 1;
            (
                Authority {
                    name: Some(format!("{}应急管理局", c.name)),
                    credit_code: Some(organ_uscc(c.code, salt)),
                },
                c.doc,
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Parties.

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "罗", "梁", "宋", "郑", "谢", "韩", "唐", "冯", "于", "董", "萧", "程", "曹",
    "袁", "邓", "许", "傅", "沈", "曾", "彭", "吕", "苏", "卢", "蒋", "蔡", "贾", "丁", "魏", "薛",
    "叶", "阎", "司马", "欧阳",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀兰", "霞", "平", "刚", "桂英", "建国", "建华", "国强", "志刚", "海燕", "红梅", "晓东",
    "春生", "玉兰", "振华", "文博", "子涵", "浩然", "宏伟", "金凤", "德胜", "保国", "卫东",
];
const TRADE_NAMES: &[&str] = &[
    "豫东", "中原", "宏达", "鑫源", "恒通", "华鑫", "金盛", "天瑞", "永安", "兴隆", "瑞丰", "嵩山",
    "黄河", "伏牛", "万基", "龙泰", "昌盛", "博远", "大地", "隆昌", "安泰", "圣光", "神火", "平煤",
    "宇通", "三元",
];
const COMPANY_FORMS: &[&str] = &[
    "有限公司",
    "有限公司",
    "有限公司",
    "有限责任公司",
    "股份有限公司",
];
const SHOPS: &[&str] = &[
    "五金店",
    "烟花爆竹零售点",
    "瓶装液化气供应站",
    "汽车修理部",
    "日用品经营部",
    "农资门市部",
    "涂料经营部",
    "石料加工厂",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum PartyKind {
    Org,
    SoleTrader,
    Person,
}

struct Place {
    city: &'static City,
    district: (&'static str, &'static str),
}

fn place(d: &mut Draw) -> Place {
    let city = d.pick(CITIES);
    Place {
        city,
        district: *d.pick(city.districts),
    }
}

fn person_name(d: &mut Draw) -> String {
    format!("{}{}", d.pick(SURNAMES), d.pick(GIVEN))
}

/// A valid ID number of someone born 1958–2001 in `area`.
fn id_number(d: &mut Draw, area: &str) -> String {
    let first = NaiveDate::from_ymd_opt(1958, 1, 1).expect("a real date");
    let birth = first + Days::new(d.below(16_000));
    let mut first17 = String::with_capacity(17);
    first17.push_str(area);
    super::push_ymd(&mut first17, birth, "");
    super::push_digits(&mut first17, d.below(1000) as u32, 3);
    let check = id_check(&first17).expect("seventeen digits");
    format!("{first17}{check}")
}

/// An organisation code body: eight digits, or `MA` + six characters of the USCC alphabet.
fn org_code(d: &mut Draw) -> String {
    let body = if d.chance(0.5) {
        let mut s = String::from("MA");
        for _ in 0..6 {
            s.push(*d.pick(USCC_ALPHABET.as_bytes()) as char);
        }
        s
    } else {
        format!("{:08}", d.below(100_000_000))
    };
    let check = org_code_check(&body).expect("digits and capital letters");
    format!("{body}{check}")
}

/// A valid USCC with the given registering-authority/kind prefix (`91` company, `92` sole trader).
fn uscc(prefix: &str, area: &str, org: &str) -> String {
    let first17 = format!("{prefix}{area}{org}");
    let check = uscc_check(&first17).expect("all characters are in the USCC alphabet");
    format!("{first17}{check}")
}

fn legal_rep(d: &mut Draw, area: &str) -> LegalRep {
    LegalRep {
        name: Some(person_name(d)),
        id_type: Some("ID".into()),
        id_no: Some(id_number(d, area)),
    }
}

fn org_party(d: &mut Draw, p: &Place, industries: &[&str], bad_uscc: bool) -> Party {
    let prefix = if d.chance(0.5) {
        "河南"
    } else {
        p.city.short
    };
    let name = format!(
        "{prefix}{}{}{}",
        d.pick(TRADE_NAMES),
        d.pick(industries),
        d.pick(COMPANY_FORMS)
    );
    let org = org_code(d);
    let mut code = uscc("91", p.district.0, &org);
    if bad_uscc {
        let right = code.pop().expect("eighteen characters");
        code.push(wrong_char(USCC_ALPHABET.as_bytes(), right, d.next()));
    }
    let org_code = d.chance(0.2).then(|| org.clone());
    Party {
        kind: Some("org".into()),
        name: Some(name),
        credit_code: Some(code),
        org_code,
        legal_rep: Some(legal_rep(d, p.district.0)),
        ..Party::default()
    }
}

fn sole_trader_party(d: &mut Draw, p: &Place, shop: &str) -> Party {
    let name = format!(
        "{}{}{}记{shop}",
        p.city.name,
        p.district.1,
        d.pick(SURNAMES)
    );
    let (credit_code, reg_no) = if d.chance(0.3) {
        let first14 = format!("{}{:08}", p.district.0, d.below(100_000_000));
        let reg = format!("{first14}{}", reg_no_check(&first14));
        ("00000000000000000X".to_string(), Some(reg))
    } else {
        let org = org_code(d);
        (uscc("92", p.district.0, &org), None)
    };
    Party {
        kind: Some("sole_trader".into()),
        name: Some(name),
        credit_code: Some(credit_code),
        reg_no,
        legal_rep: Some(legal_rep(d, p.district.0)),
        ..Party::default()
    }
}

fn person_party(d: &mut Draw, p: &Place, bad_id: bool) -> Party {
    let name = person_name(d);
    let kind = if bad_id || d.chance(0.88) {
        "ID"
    } else {
        *d.pick(&["PASSPORT", "HK_MACAO", "TAIWAN", "FOREIGN_PR"])
    };
    let id_no = match kind {
        "ID" => {
            let mut id = id_number(d, p.district.0);
            if bad_id {
                let right = id.pop().expect("eighteen characters");
                id.push(wrong_char(b"0123456789X", right, d.next()));
            }
            id
        }
        "PASSPORT" => format!("E{:08}", d.below(100_000_000)),
        "HK_MACAO" => format!(
            "{}{:08}",
            if d.chance(0.7) { "H" } else { "M" },
            d.below(100_000_000)
        ),
        "TAIWAN" => format!("{:08}", d.below(100_000_000)),
        _ => format!(
            "{}41{:010}",
            d.pick(&["USA", "KOR", "JPN", "GBR", "DEU"]),
            d.below(10_000_000_000)
        ),
    };
    Party {
        kind: Some("person".into()),
        name: Some(name),
        id_type: Some(kind.into()),
        id_no: Some(id_no),
        ..Party::default()
    }
}

fn party_kind(d: &mut Draw, defect: Option<Defect>) -> PartyKind {
    match defect {
        Some(Defect::UsccCheck) => PartyKind::Org,
        Some(Defect::IdCheck) => PartyKind::Person,
        _ => {
            let u = unit(d.next());
            if u < 0.70 {
                PartyKind::Org
            } else if u < 0.85 {
                PartyKind::SoleTrader
            } else {
                PartyKind::Person
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Shared record parts.

fn date_of(millis: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(millis)
        .expect("generated timestamps are in range")
        .with_timezone(&super::cst())
        .date_naive()
}

fn ymd(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    super::push_ymd(&mut s, d, "-");
    s
}

/// A date that matches `YYYY-MM-DD` but does not exist.
fn impossible_date(d: &mut Draw, year: i32) -> String {
    let md = d.pick(&["02-30", "02-31", "04-31", "06-31", "09-31", "11-31"]);
    format!("{year}-{md}")
}

fn add_years(d: NaiveDate, years: u32) -> NaiveDate {
    d.checked_add_months(Months::new(12 * years)).unwrap_or(d)
}

fn oversize(seed_text: &str) -> String {
    seed_text.chars().cycle().take(3000).collect()
}

/// Puts a character XML 1.0 forbids in the middle of `s`.
fn with_xml_illegal(d: &mut Draw, s: &str) -> String {
    let bad = *d.pick(&['\u{1}', '\u{B}', '\u{FFFE}']);
    let mid = s.chars().count() / 2;
    let mut out: String = s.chars().take(mid).collect();
    out.push(bad);
    out.extend(s.chars().skip(mid));
    out
}

/// Everything both kinds share: id, timestamp, decision date, authority and place.
struct Frame {
    id: String,
    updated_at: String,
    decided: NaiveDate,
    decided_on: String,
    place: Place,
    authority: Authority,
    doc_abbr: &'static str,
}

fn frame(cfg: &GenConfig, kind: Kind, i: u64, d: &mut Draw, defect: Option<Defect>) -> Frame {
    let ts = updated_at_millis(cfg, kind, i);
    let decided = date_of(ts) - Days::new(d.below(6));
    let decided_on = if defect == Some(Defect::DateInvalid) {
        impossible_date(d, decided.year())
    } else {
        ymd(decided)
    };
    let place = place(d);
    let (authority, doc_abbr) = authority((!d.chance(0.3)).then_some(place.city));
    Frame {
        id: id(kind, i),
        updated_at: format_ts(ts),
        decided,
        decided_on,
        place,
        authority,
        doc_abbr,
    }
}

/// Record `i` of `kind`: a pure function of `(cfg.seed, kind, i)` and the rates in `cfg`.
pub fn record(cfg: &GenConfig, kind: Kind, i: u64) -> SourceRecord {
    let defect = defect(cfg, kind, i);
    let mut d = Draw::new(cfg, kind, i);
    let f = frame(cfg, kind, i, &mut d, defect);
    let mut rec = match kind {
        Kind::Permit => permit(&mut d, i, &f, defect),
        Kind::Penalty => penalty(&mut d, i, &f, defect),
    };
    if defect == Some(Defect::MissingName) {
        if let Some(p) = rec.party.as_mut() {
            p.name = Some(String::new());
        }
    }
    rec
}

// ---------------------------------------------------------------------------------------------------------------
// Permits.

struct Cert {
    name: &'static str,
    /// Document number letters and word: （豫）WH安许证字〔2024〕000123.
    code: &'static str,
    word: &'static str,
    industries: &'static [&'static str],
    scopes: &'static [&'static str],
    years: u32,
}

const ORG_CERTS: &[Cert] = &[
    Cert {
        name: "安全生产许可证",
        code: "WH",
        word: "安许证字",
        industries: &["化工", "石化", "精细化工", "化学"],
        scopes: &[
            "危险化学品生产：硫酸（98%）、盐酸（31%）",
            "危险化学品生产：甲醇、二甲醚",
            "危险化学品生产：液氯、氢氧化钠溶液",
        ],
        years: 3,
    },
    Cert {
        name: "非煤矿山安全生产许可证",
        code: "FM",
        word: "安许证字",
        industries: &["矿业", "石料", "建材", "矿产开发"],
        scopes: &[
            "建筑用石料（灰岩）露天开采",
            "铝土矿地下开采",
            "钼矿地下开采",
            "石英岩露天开采",
        ],
        years: 3,
    },
    Cert {
        name: "危险化学品经营许可证",
        code: "WJ",
        word: "危化经字",
        industries: &["化工贸易", "石油化工", "燃气", "化工产品销售"],
        scopes: &[
            "汽油、柴油、液化石油气（不带储存设施经营）",
            "硫酸、盐酸、氢氧化钠（不带储存设施经营）",
            "乙醇、丙酮、甲苯（带储存设施经营）",
        ],
        years: 3,
    },
    Cert {
        name: "烟花爆竹经营（批发）许可证",
        code: "YP",
        word: "烟花批字",
        industries: &["烟花爆竹", "烟花爆竹贸易"],
        scopes: &["烟花爆竹批发：A级、B级、C级、D级", "烟花爆竹批发：C级、D级"],
        years: 3,
    },
    Cert {
        name: "危险化学品安全使用许可证",
        code: "WS",
        word: "危化使字",
        industries: &["化工", "制药", "新材料"],
        scopes: &["使用液氨作为制冷剂", "使用氯气生产次氯酸钠"],
        years: 3,
    },
];

const TRADER_CERTS: &[Cert] = &[Cert {
    name: "烟花爆竹经营（零售）许可证",
    code: "YL",
    word: "烟花零字",
    industries: &["烟花爆竹零售点"],
    scopes: &["烟花爆竹零售：C级、D级（限春节期间）"],
    years: 1,
}];

const PERSON_CERTS: &[Cert] = &[Cert {
    name: "特种作业操作证",
    code: "TZ",
    word: "特作证字",
    industries: &[],
    scopes: &[
        "低压电工作业",
        "焊接与热切割作业",
        "高处安装、维护、拆除作业",
        "危险化学品安全作业",
    ],
    years: 6,
}];

/// Permit categories the generator uses: P06 (其他) is left out because the platform then wants the concrete
/// category named, which the source has no field for.
const CATEGORIES: &[&str] = &[
    "P01", "P01", "P01", "P01", "P02", "P03", "P04", "P04", "P05",
];

fn permit(d: &mut Draw, i: u64, f: &Frame, defect: Option<Defect>) -> SourceRecord {
    let pk = party_kind(d, defect);
    let cert = match pk {
        PartyKind::Org => d.pick(ORG_CERTS),
        PartyKind::SoleTrader => d.pick(TRADER_CERTS),
        PartyKind::Person => d.pick(PERSON_CERTS),
    };
    let party = match pk {
        PartyKind::Org => org_party(
            d,
            &f.place,
            cert.industries,
            defect == Some(Defect::UsccCheck),
        ),
        PartyKind::SoleTrader => sole_trader_party(d, &f.place, cert.industries[0]),
        PartyKind::Person => person_party(d, &f.place, defect == Some(Defect::IdCheck)),
    };
    let action = *d.pick(&["准予核发", "准予核发", "准予核发", "准予延期", "准予变更"]);
    let doc_no = format!(
        "（豫）{}{}〔{}〕{:06}",
        cert.code,
        cert.word,
        f.decided.year(),
        i + 1
    );
    let valid_to = (!d.chance(0.15)).then(|| {
        let end = add_years(f.decided, cert.years);
        ymd(end.pred_opt().unwrap_or(end))
    });
    let party_name = party.name.clone().unwrap_or_default();
    let scope = d.pick(cert.scopes);
    let until = match &valid_to {
        Some(t) => format!("有效期至{t}"),
        None => "长期有效".to_string(),
    };
    let mut content = format!(
        "{action}{party_name}《{}》，许可范围：{scope}，{until}。",
        cert.name
    );
    match defect {
        Some(Defect::TooLong) => content = oversize(&content),
        Some(Defect::XmlChar) => content = with_xml_illegal(d, &content),
        _ => {}
    }
    let revoked = d.chance(0.02);
    let remarks = if revoked {
        Some("许可证件已依法注销".to_string())
    } else if action == "准予延期" {
        Some("延续换证".to_string())
    } else {
        None
    };
    SourceRecord {
        id: f.id.clone(),
        updated_at: Some(f.updated_at.clone()),
        status: Some(if revoked { "revoked" } else { "active" }.into()),
        doc_title: Some(format!("{action}《{}》行政许可决定书", cert.name)),
        doc_no: Some(doc_no.clone()),
        category: Some((*d.pick(CATEGORIES)).into()),
        cert_name: Some(cert.name.into()),
        permit_no: Some(doc_no),
        content: Some(content),
        decided_on: Some(f.decided_on.clone()),
        valid_from: Some(ymd(f.decided)),
        valid_to,
        authority: Some(f.authority.clone()),
        party: Some(party),
        remarks,
        ..SourceRecord::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Penalties.

struct Violation {
    name: &'static str,
    basis: &'static str,
    /// What was found; `{n}` is replaced by a number.
    facts: &'static str,
    /// Penalty type combinations to choose from.
    types: &'static [&'static [&'static str]],
    /// Fine range in yuan.
    fine: (u64, u64),
    /// Confiscated income or seized goods in yuan, for C03 / C04.
    seized: (u64, u64),
    /// Who can commit it: org, sole trader, person.
    who: [bool; 3],
    /// How common it is relative to the others.
    weight: u64,
}

const VIOLATIONS: &[Violation] = &[
    Violation {
        name: "未按照规定对从业人员进行安全生产教育和培训",
        basis: "《中华人民共和国安全生产法》第二十八条、第九十七条第（三）项",
        facts: "{n}名从业人员未经安全生产教育和培训合格即上岗作业",
        types: &[&["C02"], &["C01", "C02"]],
        fine: (10_000, 90_000),
        who: [true, true, false],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "未建立安全风险分级管控和隐患排查治理双重预防机制",
        basis: "《中华人民共和国安全生产法》第四十一条、第一百零一条第（五）项",
        facts: "未建立事故隐患排查治理制度，现场检查发现{n}处事故隐患未及时排查治理",
        types: &[&["C02"]],
        fine: (20_000, 100_000),
        who: [true, false, false],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "特种作业人员未按照规定取得相应资格上岗作业",
        basis: "《中华人民共和国安全生产法》第三十条、第九十七条第（七）项",
        facts: "安排{n}名未取得特种作业操作证的人员从事\"焊接&热切割\"作业",
        types: &[&["C02"], &["C01", "C02"]],
        fine: (10_000, 80_000),
        who: [true, true, false],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "未如实记录安全生产教育和培训情况",
        basis: "《中华人民共和国安全生产法》第九十七条第（四）项",
        facts: "安全生产教育和培训档案缺失，{n}名员工的培训记录与实际不符",
        types: &[&["C02"], &["C01", "C02"]],
        fine: (5_000, 50_000),
        who: [true, false, false],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "未采取措施消除事故隐患",
        basis: "《中华人民共和国安全生产法》第一百零二条",
        facts: "对检查发现的{n}项事故隐患未按要求采取措施予以消除",
        types: &[&["C02"], &["C02", "C09"]],
        fine: (50_000, 100_000),
        who: [true, false, false],
        seized: (0, 0),
        weight: 4,
    },
    Violation {
        name: "未经许可经营危险化学品",
        basis: "《危险化学品安全管理条例》第七十七条第三款",
        facts: "在未取得危险化学品经营许可证的情况下，擅自销售汽油、柴油共计{n}吨",
        types: &[&["C02", "C03"], &["C02", "C04"]],
        fine: (100_000, 200_000),
        who: [true, true, false],
        seized: (5_000, 80_000),
        weight: 3,
    },
    Violation {
        name: "未经许可经营烟花爆竹",
        basis: "《烟花爆竹安全管理条例》第三十六条第二款",
        facts: "未取得烟花爆竹零售许可证，在经营场所存放并销售烟花爆竹{n}箱",
        types: &[&["C02", "C04"]],
        fine: (1_000, 5_000),
        who: [false, true, true],
        seized: (300, 6_000),
        weight: 6,
    },
    Violation {
        name: "安全生产许可证有效期满未办理延期手续继续进行生产",
        basis: "《安全生产许可证条例》第二十条",
        facts: "安全生产许可证有效期满后未办理延期手续，继续组织生产{n}日",
        types: &[&["C02"], &["C01", "C02"]],
        fine: (50_000, 100_000),
        who: [true, false, false],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "转让安全生产许可证",
        basis: "《安全生产许可证条例》第二十一条",
        facts: "将其取得的安全生产许可证转让给他人使用，获取违法所得{n}万元",
        types: &[&["C02", "C03", "C06"]],
        fine: (100_000, 500_000),
        who: [true, false, false],
        seized: (10_000, 120_000),
        weight: 1,
    },
    Violation {
        name: "生产经营单位主要负责人未履行安全生产管理职责",
        basis: "《中华人民共和国安全生产法》第二十一条、第九十四条",
        facts: "未组织制定并实施本单位安全生产教育和培训计划，检查发现事故隐患{n}处",
        types: &[&["C02"]],
        fine: (20_000, 50_000),
        who: [false, false, true],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "从业人员违反安全生产规章制度或者操作规程",
        basis: "《中华人民共和国安全生产法》第五十七条、第一百零七条",
        facts: "在动火作业中未办理动火作业审批手续，违章作业{n}次，动火点与可燃物间距<10m",
        types: &[&["C01"], &["C01", "C02"]],
        fine: (500, 2_000),
        who: [false, false, true],
        seized: (0, 0),
        weight: 6,
    },
    Violation {
        name: "危险化学品储存不符合国家标准或行业标准",
        basis: "《危险化学品安全管理条例》第八十条第一款第（四）项",
        facts: "将{n}种禁忌危险化学品混合储存于同一仓库，库内可燃气体检测值>25%LEL",
        types: &[&["C02"], &["C02", "C09"]],
        fine: (50_000, 100_000),
        who: [true, false, false],
        seized: (0, 0),
        weight: 6,
    },
];

fn yuan(d: &mut Draw, lo: u64, hi: u64) -> String {
    let step = if hi >= 10_000 { 1_000 } else { 100 };
    let v = d.range(lo / step, hi / step) * step;
    if d.chance(0.1) {
        format!("{v}.50")
    } else {
        v.to_string()
    }
}

fn penalty(d: &mut Draw, i: u64, f: &Frame, defect: Option<Defect>) -> SourceRecord {
    let pk = party_kind(d, defect);
    let who = match pk {
        PartyKind::Org => 0,
        PartyKind::SoleTrader => 1,
        PartyKind::Person => 2,
    };
    let candidates: Vec<&Violation> = VIOLATIONS.iter().filter(|v| v.who[who]).collect();
    let total: u64 = candidates.iter().map(|v| v.weight).sum();
    let mut ticket = d.below(total);
    let mut v = candidates[0];
    for c in &candidates {
        if ticket < c.weight {
            v = c;
            break;
        }
        ticket -= c.weight;
    }
    let mut types: Vec<String> = d.pick(v.types).iter().map(|s| s.to_string()).collect();
    if defect == Some(Defect::AmountNegative) && !types.iter().any(|t| t == "C02") {
        types.push("C02".into());
        types.sort();
    }
    let party = match pk {
        PartyKind::Org => {
            let industries: Vec<&str> = ORG_CERTS
                .iter()
                .flat_map(|c| c.industries.iter().copied())
                .collect();
            org_party(d, &f.place, &industries, defect == Some(Defect::UsccCheck))
        }
        PartyKind::SoleTrader => {
            let shop = *d.pick(SHOPS);
            sole_trader_party(d, &f.place, shop)
        }
        PartyKind::Person => person_party(d, &f.place, defect == Some(Defect::IdCheck)),
    };
    let has = |code: &str| types.iter().any(|t| t == code);
    let fine_yuan = if defect == Some(Defect::AmountNegative) {
        Some("-500".to_string())
    } else {
        has("C02").then(|| yuan(d, v.fine.0, v.fine.1))
    };
    let confiscated_yuan = (has("C03") || has("C04")).then(|| yuan(d, v.seized.0, v.seized.1));
    let license_action = has("C06").then(|| {
        format!(
            "吊销《安全生产许可证》（豫）FM安许证字〔{}〕{:04}",
            f.decided.year() - 2,
            d.range(1, 999)
        )
    });

    let mut parts = Vec::new();
    for t in &types {
        match t.as_str() {
            "C01" => parts.push("警告".to_string()),
            "C02" => parts.push(format!(
                "罚款人民币{}元",
                fine_yuan.as_deref().unwrap_or("0")
            )),
            "C03" => parts.push(format!(
                "没收违法所得人民币{}元",
                confiscated_yuan.as_deref().unwrap_or("0")
            )),
            "C04" => parts.push(format!(
                "没收非法财物（涉案物品），价值人民币{}元",
                confiscated_yuan.as_deref().unwrap_or("0")
            )),
            "C06" => parts.push(license_action.clone().unwrap_or_default()),
            _ => parts.push("责令停产停业整顿".to_string()),
        }
    }
    let mut content = format!("责令限期改正，并处{}。", parts.join("，"));
    let party_name = party.name.clone().unwrap_or_default();
    let n = d.range(2, 12);
    let mut facts = format!(
        "经查，{party_name}于{}年{}月{}日{}，违反了{}的规定。",
        f.decided.year(),
        f.decided.month(),
        f.decided
            .day()
            .min(28)
            .saturating_sub(d.below(20) as u32)
            .max(1),
        v.facts.replace("{n}", &n.to_string()),
        v.basis.split('第').next().unwrap_or(v.basis)
    );
    match defect {
        Some(Defect::TooLong) => content = oversize(&content),
        Some(Defect::XmlChar) => facts = with_xml_illegal(d, &facts),
        _ => {}
    }
    // A record with an impossible decision date states its display period, so that nothing is derived from
    // the bad date and the date stays its only finding.
    let display_until = (defect == Some(Defect::DateInvalid) || d.chance(0.3))
        .then(|| ymd(add_years(f.decided, d.range(1, 3) as u32)));
    let status = match d.below(100) {
        0 | 1 => "revoked",
        2 => "changed",
        _ => "active",
    };
    SourceRecord {
        id: f.id.clone(),
        updated_at: Some(f.updated_at.clone()),
        status: Some(status.into()),
        doc_no: Some(format!(
            "{}应急罚〔{}〕{}号",
            f.doc_abbr,
            f.decided.year(),
            i + 1
        )),
        violation: Some(v.name.into()),
        facts: Some(facts),
        basis: Some(v.basis.into()),
        penalty_types: Some(types),
        content: Some(content),
        fine_yuan,
        confiscated_yuan,
        license_action,
        decided_on: Some(f.decided_on.clone()),
        effective_until: Some(ymd(add_years(f.decided, 1))),
        display_until,
        authority: Some(f.authority.clone()),
        party: Some(party),
        remarks: (status == "changed").then(|| "已作出更正决定".to_string()),
        ..SourceRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::parse_ts;

    #[test]
    fn time_bounds_are_the_documented_instants() {
        assert_eq!(parse_ts("2024-01-02T08:00:00+08:00"), Some(START_MILLIS));
        assert_eq!(parse_ts("2026-10-30T18:00:00+08:00"), Some(END_MILLIS));
    }

    #[test]
    fn check_characters_match_the_reference_vectors() {
        for v in [
            "91230500MA1B3N1N2M",
            "11230500001755309F",
            "91320105780688132K",
            "913301087458306077",
            "91330000755918469E",
            "91441900MA56F3693R",
        ] {
            assert_eq!(uscc_check(&v[..17]), v.chars().nth(17), "{v}");
            assert_eq!(org_code_check(&v[8..16]), v.chars().nth(16), "{v}");
        }
        assert_eq!(id_check("34052419800101001"), Some('X'));
        assert_eq!(id_check("11010519491231002"), Some('X'));
        assert_ne!(id_check("34052419800101001"), Some('3'));
        let agency = agency().credit_code.unwrap();
        assert_eq!(uscc_check(&agency[..17]), agency.chars().nth(17));
    }

    #[test]
    fn ids_parse_back_to_their_index() {
        let cfg = GenConfig::default();
        assert_eq!(id(Kind::Permit, 0), "XK-00000001");
        assert_eq!(
            generated_index(&cfg, "CF-00000500"),
            Some((Kind::Penalty, 499))
        );
        assert_eq!(generated_index(&cfg, "CF-00000501"), None);
        assert_eq!(generated_index(&cfg, "XK-2024-1"), None);
    }

    #[test]
    fn a_million_records_cost_nothing_to_address() {
        let cfg = GenConfig {
            records: 2_000_000,
            seed: 9,
            tie_size: 3,
            late_commit_rate: 0.1,
            invalid_rate: 0.1,
        };
        let last = cfg.count(Kind::Penalty) - 1;
        assert_eq!(last, 999_999);
        for i in [999_990, 999_998, last] {
            let r = record(&cfg, Kind::Penalty, i);
            assert_eq!(r.id, id(Kind::Penalty, i));
            let ts = updated_at_millis(&cfg, Kind::Penalty, i);
            assert!((START_MILLIS..END_MILLIS).contains(&ts));
            assert_eq!(r.updated_at, Some(format_ts(ts)));
            // index_after finds the record right after it, and the record itself from just before it.
            assert_eq!(index_after(&cfg, Kind::Penalty, ts, &r.id), i + 1);
            let before = index_after(&cfg, Kind::Penalty, ts - 1, "");
            assert!(before <= i);
            assert!(updated_at_millis(&cfg, Kind::Penalty, before) >= ts);
        }
        assert_eq!(index_after(&cfg, Kind::Penalty, i64::MIN, ""), 0);
        assert_eq!(index_after(&cfg, Kind::Penalty, END_MILLIS, ""), last + 1);
    }

    #[test]
    fn timestamps_are_monotone_with_exact_ties() {
        let cfg = GenConfig {
            records: 2_000,
            tie_size: 4,
            ..GenConfig::default()
        };
        let n = cfg.count(Kind::Permit);
        let ts: Vec<i64> = (0..n)
            .map(|i| updated_at_millis(&cfg, Kind::Permit, i))
            .collect();
        for i in 1..n as usize {
            if i % 4 == 0 {
                assert!(ts[i] > ts[i - 1]);
            } else {
                assert_eq!(ts[i], ts[i - 1]);
            }
        }
        let late = GenConfig {
            late_commit_rate: 0.3,
            ..cfg.clone()
        };
        let mut lates = 0;
        for i in 1..n {
            let (a, b) = (
                updated_at_millis(&late, Kind::Permit, i - 1),
                updated_at_millis(&late, Kind::Permit, i),
            );
            assert!(a <= b);
            if is_late(&late, Kind::Permit, i) {
                lates += 1;
                let next = updated_at_millis(&late, Kind::Permit, i + 1);
                assert!(next - b <= 120_000 && next >= b);
            }
        }
        assert!(lates > 100, "{lates}");
    }

    #[test]
    fn valid_penalties_carry_characters_that_xml_must_escape() {
        let cfg = GenConfig {
            records: 2_000,
            seed: 5,
            invalid_rate: 0.0,
            ..GenConfig::default()
        };
        let facts: String = (0..cfg.count(Kind::Penalty))
            .filter_map(|i| record(&cfg, Kind::Penalty, i).facts)
            .collect();
        for c in ['&', '<', '>', '"'] {
            assert!(facts.contains(c), "no {c} in any penalty's facts");
        }
    }

    #[test]
    fn valid_records_have_valid_identifiers_and_sane_sizes() {
        let cfg = GenConfig {
            records: 3_000,
            seed: 5,
            ..GenConfig::default()
        };
        for kind in Kind::ALL {
            for i in 0..cfg.count(kind) {
                let r = record(&cfg, kind, i);
                assert_eq!(r, record(&cfg, kind, i));
                let p = r.party.as_ref().unwrap();
                let name = p.name.as_deref().unwrap();
                assert!(!name.is_empty() && name.chars().count() < 100, "{name}");
                if let Some(code) = p.credit_code.as_deref() {
                    if code != "00000000000000000X" {
                        assert_eq!(uscc_check(&code[..17]), code.chars().nth(17), "{code}");
                    } else {
                        assert!(p.reg_no.is_some());
                    }
                }
                for (t, n) in [
                    (p.id_type.as_deref(), p.id_no.as_deref()),
                    (
                        p.legal_rep.as_ref().and_then(|l| l.id_type.as_deref()),
                        p.legal_rep.as_ref().and_then(|l| l.id_no.as_deref()),
                    ),
                ] {
                    if t == Some("ID") {
                        let n = n.unwrap();
                        assert_eq!(id_check(&n[..17]), n.chars().nth(17), "{n}");
                    }
                }
                let content = r.content.as_deref().unwrap();
                assert!(content.chars().count() < 500, "{content}");
                assert!(
                    NaiveDate::parse_from_str(r.decided_on.as_deref().unwrap(), "%Y-%m-%d").is_ok()
                );
                if kind == Kind::Penalty {
                    assert!(r.facts.as_deref().unwrap().chars().count() < 500);
                    let types = r.penalty_types.as_ref().unwrap();
                    assert!(types.iter().all(|t| t.len() == 3 && t.starts_with('C')));
                    assert_eq!(types.iter().any(|t| t == "C02"), r.fine_yuan.is_some());
                    let licence = types.iter().any(|t| t == "C05" || t == "C06");
                    assert_eq!(licence, r.license_action.is_some());
                }
            }
        }
    }

    #[test]
    fn each_defect_is_exactly_what_it_says() {
        let cfg = GenConfig {
            records: 4_000,
            invalid_rate: 0.5,
            ..GenConfig::default()
        };
        for kind in Kind::ALL {
            for i in 0..cfg.count(kind) {
                let Some(defect) = defect(&cfg, kind, i) else {
                    continue;
                };
                let r = record(&cfg, kind, i);
                let p = r.party.as_ref().unwrap();
                match defect {
                    Defect::UsccCheck => {
                        let c = p.credit_code.as_deref().unwrap();
                        assert_ne!(uscc_check(&c[..17]), c.chars().nth(17));
                    }
                    Defect::MissingName => assert_eq!(p.name.as_deref(), Some("")),
                    Defect::DateInvalid => {
                        let s = r.decided_on.as_deref().unwrap();
                        assert!(NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err(), "{s}");
                    }
                    Defect::AmountNegative => assert_eq!(r.fine_yuan.as_deref(), Some("-500")),
                    Defect::TooLong => {
                        assert_eq!(r.content.as_deref().unwrap().chars().count(), 3000)
                    }
                    Defect::XmlChar => {
                        let s = match kind {
                            Kind::Permit => r.content.as_deref(),
                            Kind::Penalty => r.facts.as_deref(),
                        };
                        assert!(s
                            .unwrap()
                            .chars()
                            .any(|c| matches!(c, '\u{1}' | '\u{B}' | '\u{FFFE}')));
                    }
                    Defect::IdCheck => {
                        assert_eq!(p.kind.as_deref(), Some("person"));
                        let n = p.id_no.as_deref().unwrap();
                        assert_ne!(id_check(&n[..17]), n.chars().nth(17));
                    }
                }
            }
        }
    }
}
