//! Deterministic, realistic payroll data.
//!
//! Everything comes from a `StdRng` seeded from `--seed` and a stream number,
//! so the same seed gives the same companies, people and ids on every run.
//! Payments are generated from their own stream per pay date, so a history that
//! grows as the calendar moves on keeps the ids of the payments it already had.

use chrono::{Datelike, Duration as Days, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

use super::model::*;
use super::spec::PayFrequency;
pub use super::spec::PayRun;

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Ava",
    "Elijah",
    "Sophia",
    "Mateo",
    "Isabella",
    "Lucas",
    "Mia",
    "Levi",
    "Charlotte",
    "Ezra",
    "Harper",
    "Asher",
    "Evelyn",
    "James",
    "Luna",
    "Leo",
    "Camila",
    "Wei",
    "Priya",
    "Arjun",
    "Fatima",
    "Omar",
    "Yuki",
    "Hiro",
    "Chloe",
    "Daniel",
    "Grace",
    "Samuel",
    "Nora",
    "Aaliyah",
    "Diego",
    "Sofia",
    "Kwame",
    "Amara",
    "Ines",
    "Tomas",
    "Hannah",
    "Jackson",
    "Zoe",
    "Malik",
    "Layla",
    "Ethan",
    "Maya",
    "Gabriel",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Chen",
    "Patel",
    "Kim",
    "Okafor",
    "Kowalski",
    "Rossi",
    "Novak",
];

const COMPANY_WORDS: &[&str] = &[
    "Blue Harbor",
    "Northwind",
    "Granite Peak",
    "Cedar & Pine",
    "Brightline",
    "Silver Creek",
    "Redwood",
    "Lakeshore",
    "Summit Ridge",
    "Ironbridge",
    "Golden Field",
    "Evergreen",
];

const COMPANY_KINDS: &[&str] = &[
    "Logistics",
    "Health",
    "Software",
    "Foods",
    "Manufacturing",
    "Analytics",
    "Outfitters",
    "Dental Group",
    "Builders",
    "Media",
];

/// (department, titles from junior to head)
const DEPARTMENTS: &[(&str, &[&str])] = &[
    (
        "Engineering",
        &[
            "Software Engineer",
            "Senior Software Engineer",
            "Staff Engineer",
            "VP of Engineering",
        ],
    ),
    (
        "Sales",
        &[
            "Account Executive",
            "Senior Account Executive",
            "Sales Manager",
            "VP of Sales",
        ],
    ),
    (
        "Marketing",
        &[
            "Marketing Associate",
            "Content Strategist",
            "Marketing Manager",
            "Head of Marketing",
        ],
    ),
    (
        "Finance",
        &[
            "Staff Accountant",
            "Senior Accountant",
            "Controller",
            "Head of Finance",
        ],
    ),
    (
        "Operations",
        &[
            "Operations Associate",
            "Warehouse Lead",
            "Operations Manager",
            "VP of Operations",
        ],
    ),
    (
        "People",
        &[
            "People Coordinator",
            "HR Generalist",
            "People Partner",
            "Head of People",
        ],
    ),
    (
        "Customer Success",
        &[
            "Support Specialist",
            "Customer Success Manager",
            "Support Team Lead",
            "Head of Customer Success",
        ],
    ),
];

/// (city, state, postal code, area code, state income tax rate in basis points)
const PLACES: &[(&str, &str, &str, &str, i64)] = &[
    ("San Francisco", "CA", "94107", "415", 600),
    ("Oakland", "CA", "94612", "510", 600),
    ("New York", "NY", "10013", "212", 550),
    ("Brooklyn", "NY", "11201", "718", 550),
    ("Austin", "TX", "78701", "512", 0),
    ("Seattle", "WA", "98101", "206", 0),
    ("Chicago", "IL", "60607", "312", 495),
    ("Boston", "MA", "02110", "617", 500),
    ("Denver", "CO", "80202", "303", 440),
    ("Atlanta", "GA", "30303", "404", 549),
];

const STREETS: &[&str] = &[
    "Market St",
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Blvd",
    "Lake Shore Dr",
    "Highland Ave",
    "Mission St",
    "Broadway",
];

/// A fresh generator for one independent stream of the seed.
pub fn stream(seed: u64, stream: u64) -> StdRng {
    // SplitMix-style mixing so that neighbouring streams are unrelated.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A UUID v4 whose random bits come from the seeded generator.
pub fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

pub fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("lists are not empty")
}

fn digits(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn place_location(rng: &mut StdRng, place: &(&str, &str, &str, &str, i64)) -> Location {
    Location {
        line1: Some(format!(
            "{} {}",
            rng.random_range(10..9900),
            pick(rng, STREETS)
        )),
        line2: rng
            .random_bool(0.3)
            .then(|| format!("Apt {}", rng.random_range(1..400))),
        city: Some(place.0.to_owned()),
        state: Some(place.1.to_owned()),
        postal_code: Some(place.2.to_owned()),
        country: Some("US".to_owned()),
        name: None,
        source_id: None,
    }
}

fn state_tax_bps(state: Option<&str>) -> i64 {
    PLACES
        .iter()
        .find(|p| Some(p.1) == state)
        .map_or(400, |p| p.4)
}

pub fn company(rng: &mut StdRng) -> Company {
    let name = format!("{} {}", pick(rng, COMPANY_WORDS), pick(rng, COMPANY_KINDS));
    let domain = name
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>();
    let hq = *pick(rng, PLACES);
    let (kind, subtype, suffix) = *pick(
        rng,
        &[
            ("corporation", Some("c_corporation"), "Inc."),
            ("corporation", Some("s_corporation"), "Corp."),
            ("llc", None, "LLC"),
        ],
    );
    let mut hq_location = place_location(rng, &hq);
    hq_location.line2 = Some(format!("Suite {}", rng.random_range(100..900)));
    hq_location.name = Some("Headquarters".to_owned());
    let mut departments: Vec<CompanyDepartment> = DEPARTMENTS
        .iter()
        .map(|(d, _)| CompanyDepartment {
            name: Some((*d).to_owned()),
            parent: None,
        })
        .collect();
    departments.push(CompanyDepartment {
        name: Some("Platform".to_owned()),
        parent: Some(NameRef {
            name: Some("Engineering".to_owned()),
        }),
    });
    Company {
        id: uuid(rng),
        legal_name: Some(format!("{name}, {suffix}")),
        entity: Some(CompanyEntity {
            kind: Some(kind.to_owned()),
            subtype: subtype.map(str::to_owned),
        }),
        ein: Some(format!("{}-{}", rng.random_range(10..99), digits(rng, 7))),
        primary_email: Some(format!("payroll@{domain}.com")),
        primary_phone_number: Some(format!("+1{}{}", hq.3, digits(rng, 7))),
        departments: Some(departments),
        locations: Some(vec![hq_location]),
        accounts: Some(vec![BankAccount {
            account_name: Some("Payroll Operating".to_owned()),
            account_number: Some(digits(rng, 10)),
            account_type: Some("checking".to_owned()),
            institution_name: Some(
                (*pick(rng, &["Chase", "Bank of America", "Wells Fargo", "SVB"])).to_owned(),
            ),
            routing_number: Some(format!("0{}", digits(rng, 8))),
        }]),
    }
}

fn email_domain(company: &Company) -> String {
    company
        .primary_email
        .as_deref()
        .and_then(|e| e.split_once('@'))
        .map_or_else(|| "example.com".to_owned(), |(_, d)| d.to_owned())
}

/// Where a new hire sits in the organisation.
#[derive(Clone, Copy)]
pub enum Role {
    Chief,
    DepartmentHead(usize),
    Member(usize),
}

/// The department index of the chief, who sits outside `DEPARTMENTS`.
const EXECUTIVE: u8 = u8::MAX;

/// Streams of a person's seed: who they are, their place in the company,
/// then one per address and per phone number they move on to.
const IDENTITY: u64 = 0;
const PLACEMENT: u64 = 1;
const ADDRESS_EDITS: u64 = 1 << 32;
const PHONE_EDITS: u64 = 2 << 32;

/// What every person of a company shares: the domain of their work email
/// and their work location.
#[derive(Debug, Clone, PartialEq)]
pub struct Workplace {
    domain: String,
    location: Option<Location>,
}

impl Workplace {
    pub fn of(company: &Company) -> Arc<Self> {
        Arc::new(Self {
            domain: email_domain(company),
            location: company.locations.as_ref().and_then(|l| l.first().cloned()),
        })
    }
}

/// A generated person, kept small: a seed from which the parts of their
/// records that never change are drawn again on every read, and what
/// changes over time. Reads give the same records every time.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    id: [u8; 36],
    seed: u64,
    workplace: Arc<Workplace>,
    /// Shared by everyone with the same manager.
    manager: Option<Arc<str>>,
    /// Cents per hour when hourly, per year otherwise.
    rate: i64,
    start: NaiveDate,
    end: Option<NaiveDate>,
    department: u8,
    /// (department, level) of the title, which edits can move elsewhere.
    title: (u8, u8),
    /// Index into `PLACES`.
    home: u8,
    hourly: bool,
    contractor: bool,
    part_time: bool,
    active: bool,
    /// Had a raise a year after starting.
    raised: bool,
    address_edits: u32,
    phone_edits: u32,
    kept: Kept,
}

/// The records of a compact person that someone read through `Deref`; not
/// part of the person, so neither cloned nor compared.
#[derive(Debug, Default)]
struct Kept(std::sync::OnceLock<Box<PersonRecord>>);

impl Clone for Kept {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Kept {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The parts of a person that never change, drawn from their seed.
struct Identity {
    first: &'static str,
    last: &'static str,
    middle: Option<char>,
    home: usize,
    dob: NaiveDate,
    personal_email: String,
    phone: String,
    gender: &'static str,
    ethnicity: &'static str,
    line1: String,
    line2: Option<String>,
    ssn: String,
    badge: String,
    source_id: String,
}

fn draw_names(rng: &mut StdRng) -> (&'static str, &'static str, Option<char>) {
    let first = *pick(rng, FIRST_NAMES);
    let last = *pick(rng, LAST_NAMES);
    let middle = rng
        .random_bool(0.3)
        .then(|| char::from(b'A' + rng.random_range(0..26u8)));
    (first, last, middle)
}

fn draw_home(rng: &mut StdRng) -> usize {
    rng.random_range(0..PLACES.len())
}

fn draw_line1(rng: &mut StdRng) -> String {
    format!("{} {}", rng.random_range(10..9900), pick(rng, STREETS))
}

fn identity(seed: u64) -> Identity {
    let mut rng = stream(seed, IDENTITY);
    let rng = &mut rng;
    let (first, last, middle) = draw_names(rng);
    let home = draw_home(rng);
    let dob = NaiveDate::from_ymd_opt(
        rng.random_range(1962..2003),
        rng.random_range(1..13),
        rng.random_range(1..29),
    )
    .expect("valid date");
    let personal_email = format!(
        "{}{}{}@{}",
        first.to_lowercase(),
        last.chars().next().unwrap_or('x').to_lowercase(),
        rng.random_range(1..99),
        pick(
            rng,
            &["gmail.com", "outlook.com", "icloud.com", "yahoo.com"]
        )
    );
    let phone = format!("+1{}{}", PLACES[home].3, digits(rng, 7));
    let gender = *pick(
        rng,
        &[
            "female",
            "male",
            "female",
            "male",
            "other",
            "decline_to_specify",
        ],
    );
    let ethnicity = *pick(
        rng,
        &[
            "white",
            "asian",
            "hispanic_or_latino",
            "black_or_african_american",
            "two_or_more_races",
            "decline_to_specify",
        ],
    );
    let line1 = draw_line1(rng);
    let line2 = rng
        .random_bool(0.3)
        .then(|| format!("Apt {}", rng.random_range(1..400)));
    let ssn = format!(
        "{}-{}-{}",
        rng.random_range(100..665),
        rng.random_range(10..99),
        rng.random_range(1000..9999)
    );
    let badge = digits(rng, 5);
    let source_id = digits(rng, 6);
    Identity {
        first,
        last,
        middle,
        home,
        dob,
        personal_email,
        phone,
        gender,
        ethnicity,
        line1,
        line2,
        ssn,
        badge,
        source_id,
    }
}

fn department_name(department: u8) -> &'static str {
    DEPARTMENTS
        .get(usize::from(department))
        .map_or("Executive", |d| d.0)
}

fn title_name((department, level): (u8, u8)) -> &'static str {
    DEPARTMENTS
        .get(usize::from(department))
        .map_or("Chief Executive Officer", |d| d.1[usize::from(level)])
}

fn income(unit: &str, amount: i64, effective: NaiveDate) -> Income {
    Income {
        unit: Some(unit.to_owned()),
        amount: Some(amount),
        currency: Some("usd".to_owned()),
        effective_date: Some(date(effective)),
    }
}

impl Profile {
    pub fn id(&self) -> &str {
        std::str::from_utf8(&self.id).expect("ids are ASCII")
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn department(&self) -> &'static str {
        department_name(self.department)
    }

    pub fn manager(&self) -> Option<&Arc<str>> {
        self.manager.as_ref()
    }

    pub fn start(&self) -> NaiveDate {
        self.start
    }

    pub fn end(&self) -> Option<NaiveDate> {
        self.end
    }

    pub fn workplace(&self) -> &Arc<Workplace> {
        &self.workplace
    }

    pub fn pay_basis(&self) -> PayBasis<'static> {
        PayBasis {
            hourly: self.hourly,
            rate: self.rate,
            contractor: self.contractor,
            part_time: self.part_time,
            state: Some(PLACES[usize::from(self.home)].1),
        }
    }

    pub fn terminate(&mut self, today: NaiveDate) {
        self.active = false;
        self.end = Some(today);
    }

    fn names(&self) -> (&'static str, &'static str, Option<String>) {
        let (first, last, middle) = draw_names(&mut stream(self.seed, IDENTITY));
        (first, last, middle.map(|m| format!("{m}.")))
    }

    pub fn directory_entry(&self) -> DirectoryEntry {
        let (first, last, middle) = self.names();
        DirectoryEntry {
            id: self.id().to_owned(),
            first_name: Some(first.to_owned()),
            middle_name: middle,
            last_name: Some(last.to_owned()),
            manager: self.manager.as_ref().map(|m| IdRef { id: m.to_string() }),
            department: Some(NameRef {
                name: Some(self.department().to_owned()),
            }),
            is_active: Some(self.active),
        }
    }

    fn individual_of(&self, who: &Identity) -> Individual {
        let place = &PLACES[who.home];
        let line1 = if self.address_edits == 0 {
            who.line1.clone()
        } else {
            draw_line1(&mut stream(
                self.seed,
                ADDRESS_EDITS + u64::from(self.address_edits),
            ))
        };
        let phone = if self.phone_edits == 0 {
            who.phone.clone()
        } else {
            let rng = &mut stream(self.seed, PHONE_EDITS + u64::from(self.phone_edits));
            let area = rng.random_range(200..990);
            format!("+1{area}{}", digits(rng, 7))
        };
        Individual {
            id: self.id().to_owned(),
            first_name: Some(who.first.to_owned()),
            middle_name: who.middle.map(|m| format!("{m}.")),
            last_name: Some(who.last.to_owned()),
            preferred_name: None,
            emails: Some(vec![
                Email {
                    data: format!(
                        "{}.{}@{}",
                        who.first.to_lowercase(),
                        who.last.to_lowercase(),
                        self.workplace.domain
                    ),
                    kind: Some("work".to_owned()),
                },
                Email {
                    data: who.personal_email.clone(),
                    kind: Some("personal".to_owned()),
                },
            ]),
            phone_numbers: Some(vec![PhoneNumber {
                data: Some(phone),
                kind: Some("personal".to_owned()),
            }]),
            gender: Some(who.gender.to_owned()),
            ethnicity: Some(who.ethnicity.to_owned()),
            dob: Some(date(who.dob)),
            residence: Some(Location {
                line1: Some(line1),
                line2: who.line2.clone(),
                city: Some(place.0.to_owned()),
                state: Some(place.1.to_owned()),
                postal_code: Some(place.2.to_owned()),
                country: Some("US".to_owned()),
                name: None,
                source_id: None,
            }),
            ssn: Some(who.ssn.clone()),
            encrypted_ssn: None,
        }
    }

    fn employment_of(&self, who: &Identity) -> Employment {
        let unit = if self.hourly { "hourly" } else { "yearly" };
        let history = if self.raised {
            vec![
                income(unit, self.rate * 100 / 106, self.start),
                income(unit, self.rate, self.start + Days::days(365)),
            ]
        } else {
            vec![income(unit, self.rate, self.start)]
        };
        let current = history.last().cloned();
        Employment {
            id: self.id().to_owned(),
            first_name: Some(who.first.to_owned()),
            middle_name: who.middle.map(|m| format!("{m}.")),
            last_name: Some(who.last.to_owned()),
            title: Some(title_name(self.title).to_owned()),
            manager: self.manager.as_ref().map(|m| IdRef { id: m.to_string() }),
            department: Some(NameRef {
                name: Some(self.department().to_owned()),
            }),
            employment: Some(EmploymentType {
                kind: Some(
                    if self.contractor {
                        "contractor"
                    } else {
                        "employee"
                    }
                    .to_owned(),
                ),
                subtype: Some(
                    if self.contractor {
                        "individual_contractor"
                    } else if self.part_time {
                        "part_time"
                    } else {
                        "full_time"
                    }
                    .to_owned(),
                ),
            }),
            employment_status: Some(if self.active { "active" } else { "terminated" }.to_owned()),
            start_date: Some(date(self.start)),
            end_date: self.end.map(date),
            latest_rehire_date: None,
            is_active: Some(self.active),
            class_code: Some(if self.hourly { "8810" } else { "8868" }.to_owned()),
            flsa_status: Some(if self.hourly { "non_exempt" } else { "exempt" }.to_owned()),
            location: self.workplace.location.clone(),
            income: current,
            income_history: Some(history),
            custom_fields: Some(vec![CustomField {
                name: Some("Badge Number".to_owned()),
                value: serde_json::Value::String(who.badge.clone()),
            }]),
            source_id: Some(who.source_id.clone()),
            work_id: None,
        }
    }

    pub fn individual(&self) -> Individual {
        self.individual_of(&identity(self.seed))
    }

    pub fn employment(&self) -> Employment {
        self.employment_of(&identity(self.seed))
    }

    pub fn record(&self) -> PersonRecord {
        let who = identity(self.seed);
        PersonRecord {
            individual: self.individual_of(&who),
            employment: self.employment_of(&who),
        }
    }

    pub(crate) fn cached_record(&self) -> Option<&PersonRecord> {
        self.kept.0.get().map(AsRef::as_ref)
    }

    pub(crate) fn kept_record(&self) -> &PersonRecord {
        self.kept.0.get_or_init(|| Box::new(self.record()))
    }

    pub(crate) fn take_record(&mut self) -> PersonRecord {
        self.kept.0.take().map_or_else(|| self.record(), |r| *r)
    }

    pub(crate) fn forget_record(&mut self) {
        self.kept.0.take();
    }
}

/// One realistic person. `manager` is the id of their manager, if any.
pub fn person(
    rng: &mut StdRng,
    workplace: &Arc<Workplace>,
    role: Role,
    manager: Option<Arc<str>>,
    today: NaiveDate,
) -> Person {
    let seed: u64 = rng.random();
    let own = &mut stream(seed, PLACEMENT);
    let mut id = [0u8; 36];
    uuid::Builder::from_random_bytes(own.random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut id);
    let (department, level) = match role {
        Role::Chief => (EXECUTIVE, 4),
        Role::DepartmentHead(d) => (d as u8, 3),
        Role::Member(d) => (d as u8, *pick(own, &[0u8, 0, 1, 1, 2])),
    };
    let member = matches!(role, Role::Member(_));
    let title = if department == EXECUTIVE {
        (EXECUTIVE, 0)
    } else {
        (department, level)
    };
    // Support and operations staff are usually paid by the hour.
    let hourly = member
        && level < 2
        && matches!(
            department_name(department),
            "Operations" | "Customer Success"
        )
        && own.random_bool(0.7);
    let contractor = member && !hourly && own.random_bool(0.06);
    let part_time = hourly && own.random_bool(0.25);
    let days_employed = match role {
        Role::Chief => own.random_range(2500..4000),
        Role::DepartmentHead(_) => own.random_range(900..2500),
        Role::Member(_) => own.random_range(30..2000),
    };
    let start = today - Days::days(days_employed);
    let terminated = member && own.random_bool(0.08);
    let end = terminated.then(|| {
        let worked = own.random_range(10..=days_employed.max(11));
        (start + Days::days(worked)).min(today - Days::days(1))
    });
    let rate = if hourly {
        own.random_range(1700..4500)
    } else {
        let base = [6_000_000, 9_000_000, 13_000_000, 18_000_000, 24_000_000][usize::from(level)];
        base + own.random_range(0..30) * 100_000
    };
    // Kept because pay depends on the home state; the same draw as `identity`.
    let mut who = stream(seed, IDENTITY);
    draw_names(&mut who);
    let home = draw_home(&mut who) as u8;
    Person::from(Profile {
        id,
        seed,
        workplace: workplace.clone(),
        manager,
        rate,
        start,
        end,
        department,
        title,
        home,
        hourly,
        contractor,
        part_time,
        active: !terminated,
        // A raise a year in, so that income history is not trivially one entry.
        raised: days_employed > 400 && !hourly,
        address_edits: 0,
        phone_edits: 0,
        kept: Kept::default(),
    })
}

/// A company's people: a chief, department heads reporting to the chief, and
/// members reporting to their department's head.
pub fn people(rng: &mut StdRng, company: &Company, n: usize, today: NaiveDate) -> Vec<Person> {
    let mut people = Vec::with_capacity(n);
    if n == 0 {
        return people;
    }
    let workplace = Workplace::of(company);
    let chief = person(rng, &workplace, Role::Chief, None, today);
    let chief_id: Arc<str> = chief.id().into();
    people.push(chief);
    let heads = (n.saturating_sub(1) / 4).clamp(1, DEPARTMENTS.len());
    let mut head_ids: Vec<Arc<str>> = Vec::new();
    for d in 0..heads {
        if people.len() == n {
            break;
        }
        let head = person(
            rng,
            &workplace,
            Role::DepartmentHead(d),
            Some(chief_id.clone()),
            today,
        );
        head_ids.push(head.id().into());
        people.push(head);
    }
    while people.len() < n {
        let d = rng.random_range(0..head_ids.len());
        let member = person(
            rng,
            &workplace,
            Role::Member(d),
            Some(head_ids[d].clone()),
            today,
        );
        people.push(member);
    }
    people
}

/// A new hire for a company that already exists, as `POST /sandbox/directory` adds.
pub fn new_hire(
    rng: &mut StdRng,
    company: &Company,
    existing: &[Arc<Person>],
    today: NaiveDate,
) -> Person {
    let d = rng.random_range(0..DEPARTMENTS.len());
    let manager = existing
        .iter()
        .find(|p| p.department() == Some(DEPARTMENTS[d].0) && p.has_manager())
        .or_else(|| existing.first());
    let manager_id = manager.map(|p| Arc::<str>::from(p.id()));
    let workplace = existing
        .iter()
        .find_map(|p| p.profile().map(|p| p.workplace().clone()))
        .unwrap_or_else(|| Workplace::of(company));
    let mut hire = person(rng, &workplace, Role::Member(d), manager_id, today);
    let profile = hire.profile_mut().expect("a generated person is compact");
    profile.start = today;
    profile.end = None;
    profile.active = true;
    profile.raised = false;
    hire
}

/// One everyday edit at the provider: a new title, a move within the same
/// state (so tax withholding stays as it was) or a new phone number.
pub fn edit(rng: &mut StdRng, person: &mut Person) {
    let kind = rng.random_range(0..3);
    if let Some(profile) = person.profile_mut() {
        match kind {
            0 => {
                let d = rng.random_range(0..DEPARTMENTS.len());
                let level = rng.random_range(0..DEPARTMENTS[d].1.len());
                profile.title = (d as u8, level as u8);
            }
            1 => profile.address_edits += 1,
            _ => profile.phone_edits += 1,
        }
        return;
    }
    match kind {
        0 => {
            let (_, titles) = pick(rng, DEPARTMENTS);
            person.employment.title = Some((*pick(rng, titles)).to_owned());
        }
        1 => {
            if let Some(home) = person.individual.residence.as_mut() {
                home.line1 = Some(draw_line1(rng));
            }
        }
        _ => {
            let area = rng.random_range(200..990);
            person.individual.phone_numbers = Some(vec![PhoneNumber {
                data: Some(format!("+1{area}{}", digits(rng, 7))),
                kind: Some("personal".to_owned()),
            }]);
        }
    }
}

/// Every bi-weekly Friday pay run from `since` up to and including `today`.
pub fn pay_runs(since: NaiveDate, today: NaiveDate) -> Vec<PayRun> {
    PayFrequency::BiWeekly.pay_runs(0, since, today)
}

fn pct(amount: i64, bps: i64) -> i64 {
    amount * bps / 10_000
}

/// The figures of one pay statement, drawn without building it, so that a
/// payment's totals cost no more than the arithmetic.
pub struct PayFigures<'a> {
    contractor: bool,
    hours: f64,
    /// (amount, hours) at the regular rate, for hourly pay.
    regular: Option<(i64, f64)>,
    overtime: Option<(i64, f64)>,
    /// Salary or contractor payment, for yearly pay.
    salary: Option<(i64, f64)>,
    bonus: Option<i64>,
    /// (deduction, employer match)
    retirement: Option<(i64, i64)>,
    medical: i64,
    taxes: Option<TaxFigures<'a>>,
    direct_deposit: bool,
    gross: i64,
}

struct TaxFigures<'a> {
    federal: i64,
    social_security: i64,
    medicare: i64,
    /// (state, amount), where the state taxes income.
    state: Option<(&'a str, i64)>,
    futa: i64,
}

impl PayFigures<'_> {
    fn withheld(&self) -> i64 {
        self.taxes.as_ref().map_or(0, |t| {
            t.federal + t.social_security + t.medicare + t.state.map_or(0, |s| s.1)
        })
    }

    fn employer_taxes(&self) -> i64 {
        self.taxes
            .as_ref()
            .map_or(0, |t| t.social_security + t.medicare + t.futa)
    }

    fn net(&self) -> i64 {
        let deducted = self.retirement.map_or(0, |r| r.0) + self.medical;
        self.gross - self.withheld() - deducted
    }

    pub fn totals(&self) -> Totals {
        Totals {
            gross: self.gross,
            net: self.net(),
            employer_taxes: self.employer_taxes(),
            employee_taxes: self.withheld(),
        }
    }
}

/// Draws one person's pay for a regular pay run.
pub fn pay_figures<'a>(
    rng: &mut StdRng,
    person: &'a Person,
    frequency: PayFrequency,
) -> PayFigures<'a> {
    let periods = frequency.periods_per_year();
    // Hours in one period of a 40-hour week.
    let period_hours = (2080 / periods) as f64;
    let basis = person.pay_basis();
    let (contractor, part_time, rate) = (basis.contractor, basis.part_time, basis.rate);
    let (mut regular, mut overtime, mut salary) = (None, None, None);
    let hours;
    if basis.hourly {
        let regular_hours = if part_time {
            (f64::from(rng.random_range(50..75)) * period_hours / 100.0).round()
        } else {
            period_hours
        };
        let overtime_hours = if !part_time && rng.random_bool(0.3) {
            f64::from(rng.random_range(1..10))
        } else {
            0.0
        };
        hours = regular_hours + overtime_hours;
        regular = Some(((rate as f64 * regular_hours).round() as i64, regular_hours));
        if overtime_hours > 0.0 {
            overtime = Some((
                (rate as f64 * 1.5 * overtime_hours).round() as i64,
                overtime_hours,
            ));
        }
    } else {
        hours = period_hours;
        salary = Some((rate / periods, period_hours));
    }
    let bonus = (!contractor && rng.random_bool(0.05)).then(|| rng.random_range(5..40) * 10_000);
    let gross = [regular, overtime, salary]
        .iter()
        .flatten()
        .map(|e| e.0)
        .sum::<i64>()
        + bonus.unwrap_or(0);

    let (mut retirement, mut medical, mut taxes) = (None, 0, None);
    if !contractor {
        let retirement_bps = *pick(rng, &[0, 300, 400, 500, 600, 800]);
        medical = if part_time {
            0
        } else {
            [8_500, 12_000, 18_500, 24_000][rng.random_range(0..4)]
        };
        if retirement_bps > 0 {
            retirement = Some((
                pct(gross, retirement_bps),
                pct(gross, retirement_bps.min(400)),
            ));
        }
        let income_taxable = gross - pct(gross, retirement_bps) - medical;
        let fica_taxable = gross - medical;
        // A rough progressive federal rate: 10% at low pay up to 24% for executives.
        let federal_bps = (1_000 + gross / 2_000).min(2_400);
        let state_bps = state_tax_bps(basis.state);
        taxes = Some(TaxFigures {
            federal: pct(income_taxable, federal_bps),
            social_security: pct(fica_taxable, 620),
            medicare: pct(fica_taxable, 145),
            state: (state_bps > 0).then(|| {
                (
                    basis.state.unwrap_or("State"),
                    pct(income_taxable, state_bps),
                )
            }),
            futa: pct(fica_taxable, 60),
        });
    }
    PayFigures {
        contractor,
        hours,
        regular,
        overtime,
        salary,
        bonus,
        retirement,
        medical,
        taxes,
        direct_deposit: rng.random_bool(0.95),
        gross,
    }
}

/// One person's pay statement for a regular pay run. Figures add up:
/// net = gross - employee taxes - employee deductions.
pub fn pay_statement(rng: &mut StdRng, person: &Person, frequency: PayFrequency) -> PayStatement {
    let f = pay_figures(rng, person, frequency);
    let earning = |name: &str, kind: &str, amount: i64, hours: Option<f64>| Earning {
        name: name.to_owned(),
        kind: kind.to_owned(),
        amount,
        currency: "usd",
        hours,
    };
    let mut earnings = Vec::new();
    if let Some((amount, hours)) = f.regular {
        earnings.push(earning("Regular Hours", "wage", amount, Some(hours)));
    }
    if let Some((amount, hours)) = f.overtime {
        earnings.push(earning("Overtime", "overtime", amount, Some(hours)));
    }
    if let Some((amount, hours)) = f.salary {
        earnings.push(if f.contractor {
            earning("Contractor Payment", "1099", amount, Some(hours))
        } else {
            earning("Salary", "salary", amount, Some(hours))
        });
    }
    if let Some(amount) = f.bonus {
        earnings.push(earning("Spot Bonus", "bonus", amount, None));
    }
    let mut deductions = Vec::new();
    let mut contributions = Vec::new();
    if let Some((deduction, matched)) = f.retirement {
        deductions.push(Deduction {
            name: "401(k)".to_owned(),
            kind: Some("401k".to_owned()),
            pre_tax: true,
            amount: deduction,
            currency: "usd",
        });
        contributions.push(Contribution {
            name: "401(k) Match".to_owned(),
            kind: Some("401k".to_owned()),
            amount: matched,
            currency: "usd",
        });
    }
    if f.medical > 0 {
        deductions.push(Deduction {
            name: "Medical".to_owned(),
            kind: Some("s125_medical".to_owned()),
            pre_tax: true,
            amount: f.medical,
            currency: "usd",
        });
        contributions.push(Contribution {
            name: "Medical".to_owned(),
            kind: Some("s125_medical".to_owned()),
            amount: f.medical * 3,
            currency: "usd",
        });
    }
    let mut taxes = Vec::new();
    if let Some(t) = &f.taxes {
        let mut tax = |name: &str, kind: &str, employer: bool, amount: i64| {
            taxes.push(Tax {
                name: name.to_owned(),
                kind: kind.to_owned(),
                employer,
                amount,
                currency: "usd",
            });
        };
        tax("Federal Income Tax", "federal", false, t.federal);
        tax("Social Security", "fica", false, t.social_security);
        tax("Medicare", "fica", false, t.medicare);
        if let Some((state, amount)) = t.state {
            tax(&format!("{state} State Income Tax"), "state", false, amount);
        }
        tax("Social Security", "fica", true, t.social_security);
        tax("Medicare", "fica", true, t.medicare);
        tax("Federal Unemployment (FUTA)", "federal", true, t.futa);
    }
    PayStatement {
        individual_id: person.id().to_owned(),
        kind: "regular_payroll".to_owned(),
        payment_method: if f.direct_deposit {
            "direct_deposit"
        } else {
            "check"
        }
        .to_owned(),
        total_hours: Some(f.hours),
        gross_pay: Money::usd(f.gross),
        net_pay: Money::usd(f.net()),
        earnings,
        taxes,
        employee_deductions: deductions,
        employer_contributions: contributions,
    }
}

/// A regular payroll run for everyone employed during the period.
pub fn payment(rng: &mut StdRng, people: &[Arc<Person>], run: PayRun) -> PaymentRecord {
    payment_of(rng, Arc::new(people.to_vec()), run)
}

/// `payment` with a staff list that other payments may share.
pub fn payment_of(rng: &mut StdRng, staff: Arc<Vec<Arc<Person>>>, run: PayRun) -> PaymentRecord {
    let id = uuid(rng);
    let statements = Statements::Derived {
        seed: rng.random(),
        frequency: run.frequency,
        paid: Arc::new(Paid::employed_during(staff, run.start, run.end)),
    };
    PaymentRecord::new(id, &run, statements, 0)
}

/// The seed stream of the payment paid on `pay_date`, so that a payment keeps its
/// id however far back the history starts.
pub fn payment_stream(seed: u64, connection: u64, pay_date: NaiveDate) -> StdRng {
    stream(
        seed ^ (connection << 32),
        0x5041_5900_0000 + u64::try_from(pay_date.num_days_from_ce()).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 15).unwrap()
    }

    #[test]
    fn same_seed_same_people() {
        let mut a = stream(7, 1);
        let mut b = stream(7, 1);
        let ca = company(&mut a);
        let cb = company(&mut b);
        assert_eq!(ca, cb);
        assert_eq!(
            people(&mut a, &ca, 20, today()),
            people(&mut b, &cb, 20, today())
        );
        let mut c = stream(8, 1);
        assert_ne!(company(&mut c).id, ca.id);
    }

    #[test]
    fn org_chart_has_managers_that_exist() {
        let mut rng = stream(1, 1);
        let co = company(&mut rng);
        let staff = people(&mut rng, &co, 20, today());
        assert_eq!(staff.len(), 20);
        assert!(staff[0].employment.manager.is_none());
        for p in &staff[1..] {
            let m = p
                .employment
                .manager
                .as_ref()
                .expect("everyone but the chief has a manager");
            assert!(staff.iter().any(|q| q.id() == m.id));
        }
    }

    #[test]
    fn statements_add_up() {
        let mut rng = stream(3, 2);
        let co = company(&mut rng);
        let staff = people(&mut rng, &co, 30, today());
        let run = *pay_runs(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), today())
            .last()
            .unwrap();
        let staff: Vec<_> = staff.into_iter().map(std::sync::Arc::new).collect();
        let record = payment(&mut rng, &staff, run);
        assert!(!record.statements.is_empty());
        let statements = record.statements.list();
        assert_eq!(statements, record.statements.list(), "the same every read");
        for s in &statements {
            let earned: i64 = s.earnings.iter().map(|e| e.amount).sum();
            assert_eq!(earned, s.gross_pay.amount);
            let withheld: i64 = s
                .taxes
                .iter()
                .filter(|t| !t.employer)
                .map(|t| t.amount)
                .sum();
            let deducted: i64 = s.employee_deductions.iter().map(|d| d.amount).sum();
            assert_eq!(s.net_pay.amount, earned - withheld - deducted);
            assert!(s.net_pay.amount > 0);
        }
        let gross: i64 = statements.iter().map(|s| s.gross_pay.amount).sum();
        let net: i64 = statements.iter().map(|s| s.net_pay.amount).sum();
        let employer_taxes: i64 = statements
            .iter()
            .flat_map(|s| &s.taxes)
            .filter(|t| t.employer)
            .map(|t| t.amount)
            .sum();
        let body = record.payment_body();
        assert_eq!(body.gross_pay.amount, gross);
        assert_eq!(body.net_pay.amount, net);
        assert_eq!(body.employer_taxes.amount, employer_taxes);
        assert_eq!(body.company_debit.amount, gross + employer_taxes);
        assert_eq!(body.individual_ids.len(), statements.len());
    }

    #[test]
    fn a_payment_pays_whoever_was_employed_during_its_period() {
        let mut rng = stream(3, 4);
        let co = company(&mut rng);
        let staff: Vec<_> = people(&mut rng, &co, 200, today())
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        let runs = pay_runs(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap(), today());
        let shared = std::sync::Arc::new(staff.clone());
        for run in [runs[0], runs[runs.len() - 1]] {
            let record = payment_of(&mut rng, shared.clone(), run);
            let expected: Vec<String> = staff
                .iter()
                .filter(|p| {
                    let e = &p.employment_body();
                    let start: NaiveDate = e.start_date.as_deref().unwrap().parse().unwrap();
                    let end: Option<NaiveDate> = e.end_date.as_deref().map(|d| d.parse().unwrap());
                    start <= run.end && end.is_none_or(|end| end >= run.start)
                })
                .map(|p| p.id().to_owned())
                .collect();
            assert!(expected.len() < staff.len(), "someone was not there");
            assert_eq!(record.statements.individual_ids(), expected);
        }
    }

    #[test]
    fn pay_runs_are_biweekly_fridays() {
        let runs = pay_runs(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), today());
        assert!(runs.len() >= 12);
        for pair in runs.windows(2) {
            assert_eq!((pair[1].pay_date - pair[0].pay_date).num_days(), 14);
        }
        assert!(runs
            .iter()
            .all(|r| r.pay_date.weekday() == chrono::Weekday::Fri));
    }
}
