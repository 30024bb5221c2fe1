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

/// One realistic person. `manager` is the id of their manager, if any.
pub fn person(
    rng: &mut StdRng,
    company: &Company,
    role: Role,
    manager: Option<&str>,
    today: NaiveDate,
) -> Person {
    let id = uuid(rng);
    let first = (*pick(rng, FIRST_NAMES)).to_owned();
    let last = (*pick(rng, LAST_NAMES)).to_owned();
    let middle = rng
        .random_bool(0.3)
        .then(|| format!("{}.", char::from(b'A' + rng.random_range(0..26u8))));
    let (department, title, level) = match role {
        Role::Chief => ("Executive", "Chief Executive Officer", 4),
        Role::DepartmentHead(d) => (DEPARTMENTS[d].0, DEPARTMENTS[d].1[3], 3),
        Role::Member(d) => {
            let level = *pick(rng, &[0, 0, 1, 1, 2]);
            (DEPARTMENTS[d].0, DEPARTMENTS[d].1[level], level)
        }
    };
    // Support and operations staff are usually paid by the hour.
    let hourly = matches!(role, Role::Member(_))
        && level < 2
        && matches!(department, "Operations" | "Customer Success")
        && rng.random_bool(0.7);
    let contractor = matches!(role, Role::Member(_)) && !hourly && rng.random_bool(0.06);
    let part_time = hourly && rng.random_bool(0.25);

    let days_employed = match role {
        Role::Chief => rng.random_range(2500..4000),
        Role::DepartmentHead(_) => rng.random_range(900..2500),
        Role::Member(_) => rng.random_range(30..2000),
    };
    let start = today - Days::days(days_employed);
    let terminated = matches!(role, Role::Member(_)) && rng.random_bool(0.08);
    let end = terminated.then(|| {
        let worked = rng.random_range(10..=days_employed.max(11));
        (start + Days::days(worked)).min(today - Days::days(1))
    });
    let dob = NaiveDate::from_ymd_opt(
        rng.random_range(1962..2003),
        rng.random_range(1..13),
        rng.random_range(1..29),
    )
    .expect("valid date");

    let income = if hourly {
        Income {
            unit: Some("hourly".to_owned()),
            amount: Some(rng.random_range(1700..4500)),
            currency: Some("usd".to_owned()),
            effective_date: Some(date(start)),
        }
    } else {
        let base = [6_000_000, 9_000_000, 13_000_000, 18_000_000, 24_000_000][level];
        let annual = base + rng.random_range(0..30) * 100_000;
        Income {
            unit: Some("yearly".to_owned()),
            amount: Some(annual),
            currency: Some("usd".to_owned()),
            effective_date: Some(date(start)),
        }
    };
    let mut history = vec![income.clone()];
    if days_employed > 400 && !hourly {
        // A raise a year in, so that income history is not trivially one entry.
        let earlier = Income {
            amount: income.amount.map(|a| a * 100 / 106),
            effective_date: Some(date(start)),
            ..income.clone()
        };
        let raise_on = start + Days::days(365);
        history = vec![
            earlier,
            Income {
                effective_date: Some(date(raise_on)),
                ..income.clone()
            },
        ];
    }
    let income = history.last().cloned().expect("history is not empty");

    let home = *pick(rng, PLACES);
    let domain = email_domain(company);
    let work_email = format!("{}.{}@{domain}", first.to_lowercase(), last.to_lowercase());
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
    let ssn = format!(
        "{}-{}-{}",
        rng.random_range(100..665),
        rng.random_range(10..99),
        rng.random_range(1000..9999)
    );
    let individual = Individual {
        id: id.clone(),
        first_name: Some(first.clone()),
        middle_name: middle.clone(),
        last_name: Some(last.clone()),
        preferred_name: None,
        emails: Some(vec![
            Email {
                data: work_email,
                kind: Some("work".to_owned()),
            },
            Email {
                data: personal_email,
                kind: Some("personal".to_owned()),
            },
        ]),
        phone_numbers: Some(vec![PhoneNumber {
            data: Some(format!("+1{}{}", home.3, digits(rng, 7))),
            kind: Some("personal".to_owned()),
        }]),
        gender: Some(
            (*pick(
                rng,
                &[
                    "female",
                    "male",
                    "female",
                    "male",
                    "other",
                    "decline_to_specify",
                ],
            ))
            .to_owned(),
        ),
        ethnicity: Some(
            (*pick(
                rng,
                &[
                    "white",
                    "asian",
                    "hispanic_or_latino",
                    "black_or_african_american",
                    "two_or_more_races",
                    "decline_to_specify",
                ],
            ))
            .to_owned(),
        ),
        dob: Some(date(dob)),
        residence: Some(place_location(rng, &home)),
        ssn: Some(ssn),
        encrypted_ssn: None,
    };
    let work_location = company.locations.as_ref().and_then(|l| l.first().cloned());
    let employment = Employment {
        id: id.clone(),
        first_name: Some(first),
        middle_name: middle,
        last_name: Some(last),
        title: Some(title.to_owned()),
        manager: manager.map(|m| IdRef { id: m.to_owned() }),
        department: Some(NameRef {
            name: Some(department.to_owned()),
        }),
        employment: Some(EmploymentType {
            kind: Some(if contractor { "contractor" } else { "employee" }.to_owned()),
            subtype: Some(
                if contractor {
                    "individual_contractor"
                } else if part_time {
                    "part_time"
                } else {
                    "full_time"
                }
                .to_owned(),
            ),
        }),
        employment_status: Some(if terminated { "terminated" } else { "active" }.to_owned()),
        start_date: Some(date(start)),
        end_date: end.map(date),
        latest_rehire_date: None,
        is_active: Some(!terminated),
        class_code: Some(if hourly { "8810" } else { "8868" }.to_owned()),
        flsa_status: Some(if hourly { "non_exempt" } else { "exempt" }.to_owned()),
        location: work_location,
        income: Some(income),
        income_history: Some(history),
        custom_fields: Some(vec![CustomField {
            name: Some("Badge Number".to_owned()),
            value: serde_json::Value::String(digits(rng, 5)),
        }]),
        source_id: Some(digits(rng, 6)),
        work_id: None,
    };
    Person {
        individual,
        employment,
    }
}

/// A company's people: a chief, department heads reporting to the chief, and
/// members reporting to their department's head.
pub fn people(rng: &mut StdRng, company: &Company, n: usize, today: NaiveDate) -> Vec<Person> {
    let mut people = Vec::with_capacity(n);
    if n == 0 {
        return people;
    }
    let chief = person(rng, company, Role::Chief, None, today);
    let chief_id = chief.id().to_owned();
    people.push(chief);
    let heads = (n.saturating_sub(1) / 4).clamp(1, DEPARTMENTS.len());
    let mut head_ids = Vec::new();
    for d in 0..heads {
        if people.len() == n {
            break;
        }
        let head = person(
            rng,
            company,
            Role::DepartmentHead(d),
            Some(&chief_id),
            today,
        );
        head_ids.push(head.id().to_owned());
        people.push(head);
    }
    while people.len() < n {
        let d = rng.random_range(0..head_ids.len());
        let member = person(rng, company, Role::Member(d), Some(&head_ids[d]), today);
        people.push(member);
    }
    people
}

/// A new hire for a company that already exists, as `POST /sandbox/directory` adds.
pub fn new_hire(
    rng: &mut StdRng,
    company: &Company,
    existing: &[Person],
    today: NaiveDate,
) -> Person {
    let d = rng.random_range(0..DEPARTMENTS.len());
    let manager = existing
        .iter()
        .find(|p| {
            p.employment
                .department
                .as_ref()
                .and_then(|d| d.name.as_deref())
                == Some(DEPARTMENTS[d].0)
                && p.employment.manager.is_some()
        })
        .or_else(|| existing.first())
        .map(|p| p.id().to_owned());
    let mut hire = person(rng, company, Role::Member(d), manager.as_deref(), today);
    let start = date(today);
    hire.employment.start_date = Some(start.clone());
    hire.employment.end_date = None;
    hire.employment.is_active = Some(true);
    hire.employment.employment_status = Some("active".to_owned());
    if let Some(income) = hire.employment.income.as_mut() {
        income.effective_date = Some(start);
        hire.employment.income_history = Some(vec![income.clone()]);
    }
    hire
}

/// One everyday edit at the provider: a new title, a move within the same
/// state (so tax withholding stays as it was) or a new phone number.
pub fn edit(rng: &mut StdRng, person: &mut Person) {
    match rng.random_range(0..3) {
        0 => {
            let (_, titles) = pick(rng, DEPARTMENTS);
            person.employment.title = Some((*pick(rng, titles)).to_owned());
        }
        1 => {
            if let Some(home) = person.individual.residence.as_mut() {
                home.line1 = Some(format!(
                    "{} {}",
                    rng.random_range(10..9900),
                    pick(rng, STREETS)
                ));
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

fn employed_during(person: &Person, run: &PayRun) -> bool {
    let parse = |d: &Option<String>| d.as_deref().and_then(|d| d.parse::<NaiveDate>().ok());
    let started = parse(&person.employment.start_date).is_none_or(|s| s <= run.end);
    let not_left = parse(&person.employment.end_date).is_none_or(|e| e >= run.start);
    started && not_left
}

fn pct(amount: i64, bps: i64) -> i64 {
    amount * bps / 10_000
}

/// One person's pay statement for a regular pay run. Figures add up:
/// net = gross - employee taxes - employee deductions.
pub fn pay_statement(rng: &mut StdRng, person: &Person, frequency: PayFrequency) -> PayStatement {
    let periods = frequency.periods_per_year();
    // Hours in one period of a 40-hour week.
    let period_hours = (2080 / periods) as f64;
    let e = &person.employment;
    let income = e.income.clone();
    let unit = income
        .as_ref()
        .and_then(|i| i.unit.as_deref())
        .unwrap_or("yearly");
    let rate = income.as_ref().and_then(|i| i.amount).unwrap_or(5_000_000);
    let contractor = e.employment.as_ref().and_then(|t| t.kind.as_deref()) == Some("contractor");
    let part_time = e.employment.as_ref().and_then(|t| t.subtype.as_deref()) == Some("part_time");

    let mut earnings = Vec::new();
    let hours;
    if unit == "hourly" {
        let regular = if part_time {
            (f64::from(rng.random_range(50..75)) * period_hours / 100.0).round()
        } else {
            period_hours
        };
        let overtime = if !part_time && rng.random_bool(0.3) {
            f64::from(rng.random_range(1..10))
        } else {
            0.0
        };
        hours = regular + overtime;
        earnings.push(Earning {
            name: "Regular Hours".to_owned(),
            kind: "wage".to_owned(),
            amount: (rate as f64 * regular).round() as i64,
            currency: "usd",
            hours: Some(regular),
        });
        if overtime > 0.0 {
            earnings.push(Earning {
                name: "Overtime".to_owned(),
                kind: "overtime".to_owned(),
                amount: (rate as f64 * 1.5 * overtime).round() as i64,
                currency: "usd",
                hours: Some(overtime),
            });
        }
    } else {
        hours = period_hours;
        earnings.push(Earning {
            name: if contractor {
                "Contractor Payment"
            } else {
                "Salary"
            }
            .to_owned(),
            kind: if contractor { "1099" } else { "salary" }.to_owned(),
            amount: rate / periods,
            currency: "usd",
            hours: Some(period_hours),
        });
    }
    if !contractor && rng.random_bool(0.05) {
        earnings.push(Earning {
            name: "Spot Bonus".to_owned(),
            kind: "bonus".to_owned(),
            amount: rng.random_range(5..40) * 10_000,
            currency: "usd",
            hours: None,
        });
    }
    let gross: i64 = earnings.iter().map(|e| e.amount).sum();

    let mut taxes = Vec::new();
    let mut deductions = Vec::new();
    let mut contributions = Vec::new();
    if !contractor {
        let retirement_bps = *pick(rng, &[0, 300, 400, 500, 600, 800]);
        let medical = if part_time {
            0
        } else {
            [8_500, 12_000, 18_500, 24_000][rng.random_range(0..4)]
        };
        if retirement_bps > 0 {
            deductions.push(Deduction {
                name: "401(k)".to_owned(),
                kind: Some("401k".to_owned()),
                pre_tax: true,
                amount: pct(gross, retirement_bps),
                currency: "usd",
            });
            contributions.push(Contribution {
                name: "401(k) Match".to_owned(),
                kind: Some("401k".to_owned()),
                amount: pct(gross, retirement_bps.min(400)),
                currency: "usd",
            });
        }
        if medical > 0 {
            deductions.push(Deduction {
                name: "Medical".to_owned(),
                kind: Some("s125_medical".to_owned()),
                pre_tax: true,
                amount: medical,
                currency: "usd",
            });
            contributions.push(Contribution {
                name: "Medical".to_owned(),
                kind: Some("s125_medical".to_owned()),
                amount: medical * 3,
                currency: "usd",
            });
        }
        let retirement = pct(gross, retirement_bps);
        let income_taxable = gross - retirement - medical;
        let fica_taxable = gross - medical;
        // A rough progressive federal rate: 10% at low pay up to 24% for executives.
        let federal_bps = (1_000 + gross / 2_000).min(2_400);
        let state = person
            .individual
            .residence
            .as_ref()
            .and_then(|r| r.state.as_deref());
        let state_bps = state_tax_bps(state);
        let mut tax = |name: &str, kind: &str, employer: bool, amount: i64| {
            taxes.push(Tax {
                name: name.to_owned(),
                kind: kind.to_owned(),
                employer,
                amount,
                currency: "usd",
            });
        };
        tax(
            "Federal Income Tax",
            "federal",
            false,
            pct(income_taxable, federal_bps),
        );
        tax("Social Security", "fica", false, pct(fica_taxable, 620));
        tax("Medicare", "fica", false, pct(fica_taxable, 145));
        if state_bps > 0 {
            tax(
                &format!("{} State Income Tax", state.unwrap_or("State")),
                "state",
                false,
                pct(income_taxable, state_bps),
            );
        }
        tax("Social Security", "fica", true, pct(fica_taxable, 620));
        tax("Medicare", "fica", true, pct(fica_taxable, 145));
        tax(
            "Federal Unemployment (FUTA)",
            "federal",
            true,
            pct(fica_taxable, 60),
        );
    }
    let withheld: i64 = taxes.iter().filter(|t| !t.employer).map(|t| t.amount).sum();
    let deducted: i64 = deductions.iter().map(|d| d.amount).sum();
    PayStatement {
        individual_id: person.id().to_owned(),
        kind: "regular_payroll".to_owned(),
        payment_method: if rng.random_bool(0.95) {
            "direct_deposit"
        } else {
            "check"
        }
        .to_owned(),
        total_hours: Some(hours),
        gross_pay: Money::usd(gross),
        net_pay: Money::usd(gross - withheld - deducted),
        earnings,
        taxes,
        employee_deductions: deductions,
        employer_contributions: contributions,
    }
}

/// A regular payroll run for everyone employed during the period.
pub fn payment(rng: &mut StdRng, people: &[Person], run: PayRun) -> PaymentRecord {
    let id = uuid(rng);
    let statements = people
        .iter()
        .filter(|p| employed_during(p, &run))
        .map(|p| pay_statement(rng, p, run.frequency))
        .collect();
    let mut record = PaymentRecord::from_statements(
        id,
        PayPeriod {
            start_date: date(run.start),
            end_date: date(run.end),
        },
        date(run.pay_date),
        date(run.debit_date()),
        statements,
    );
    record.payment.pay_frequencies = vec![run.frequency.as_str().to_owned()];
    record
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
        let record = payment(&mut rng, &staff, run);
        assert!(!record.statements.is_empty());
        for s in &record.statements {
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
        let gross: i64 = record.statements.iter().map(|s| s.gross_pay.amount).sum();
        assert_eq!(record.payment.gross_pay.amount, gross);
        assert_eq!(
            record.payment.company_debit.amount,
            gross + record.payment.employer_taxes.amount
        );
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
