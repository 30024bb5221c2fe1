//! The records an emulated payroll system holds, in the shapes Finch's API returns.
//!
//! Every optional field is serialised as `null` rather than omitted, because
//! that is what Finch does and what clients must cope with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::seed::Profile;
use super::spec::PayFrequency;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Location {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub source_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NameRef {
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompanyDepartment {
    pub name: Option<String>,
    pub parent: Option<NameRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompanyEntity {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subtype: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BankAccount {
    pub account_name: Option<String>,
    pub account_number: Option<String>,
    pub account_type: Option<String>,
    pub institution_name: Option<String>,
    pub routing_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub id: String,
    pub legal_name: Option<String>,
    pub entity: Option<CompanyEntity>,
    pub ein: Option<String>,
    pub primary_email: Option<String>,
    pub primary_phone_number: Option<String>,
    pub departments: Option<Vec<CompanyDepartment>>,
    pub locations: Option<Vec<Location>>,
    pub accounts: Option<Vec<BankAccount>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Email {
    pub data: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneNumber {
    pub data: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `/employer/individual` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Individual {
    pub id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub preferred_name: Option<String>,
    pub emails: Option<Vec<Email>>,
    pub phone_numbers: Option<Vec<PhoneNumber>>,
    pub gender: Option<String>,
    pub ethnicity: Option<String>,
    pub dob: Option<String>,
    pub residence: Option<Location>,
    /// Only returned when the caller asks for it and the connection has the `ssn` product.
    pub ssn: Option<String>,
    pub encrypted_ssn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmploymentType {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subtype: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Income {
    pub unit: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub effective_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    pub name: Option<String>,
    pub value: serde_json::Value,
}

/// `/employer/employment` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Employment {
    pub id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub manager: Option<IdRef>,
    pub department: Option<NameRef>,
    pub employment: Option<EmploymentType>,
    pub employment_status: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub latest_rehire_date: Option<String>,
    pub is_active: Option<bool>,
    pub class_code: Option<String>,
    pub flsa_status: Option<String>,
    pub location: Option<Location>,
    pub income: Option<Income>,
    pub income_history: Option<Vec<Income>>,
    pub custom_fields: Option<Vec<CustomField>>,
    pub source_id: Option<String>,
    pub work_id: Option<String>,
}

/// One person's records in full, as the endpoints return them.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRecord {
    pub individual: Individual,
    pub employment: Employment,
}

/// `/employer/directory` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub manager: Option<IdRef>,
    pub department: Option<NameRef>,
    pub is_active: Option<bool>,
}

impl PersonRecord {
    pub fn directory_entry(&self) -> DirectoryEntry {
        let e = &self.employment;
        DirectoryEntry {
            id: e.id.clone(),
            first_name: e.first_name.clone(),
            middle_name: e.middle_name.clone(),
            last_name: e.last_name.clone(),
            manager: e.manager.clone(),
            department: e.department.clone(),
            is_active: e.is_active,
        }
    }

    /// Names live once in a payroll system; keep both projections agreeing
    /// after a sandbox update touched one of them.
    pub fn names_from_individual(&mut self) {
        self.employment.first_name = self.individual.first_name.clone();
        self.employment.middle_name = self.individual.middle_name.clone();
        self.employment.last_name = self.individual.last_name.clone();
    }

    pub fn names_from_employment(&mut self) {
        self.individual.first_name = self.employment.first_name.clone();
        self.individual.middle_name = self.employment.middle_name.clone();
        self.individual.last_name = self.employment.last_name.clone();
    }
}

/// One person in the provider's system: Finch splits it over three endpoints.
///
/// A fleet holds hundreds of thousands of people, so a generated person keeps
/// only its seed and what changes over time (`Profile`), and its records are
/// generated again whenever they are read. A person whose records were written
/// from outside (the sandbox API, a reconnect) is stored in full instead.
#[derive(Debug, Clone)]
pub struct Person {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Compact(Profile),
    Stored(Box<PersonRecord>),
}

/// What a person's pay statements depend on.
#[derive(Debug, Clone, Copy)]
pub struct PayBasis<'a> {
    pub hourly: bool,
    /// Cents per hour when hourly, per year otherwise.
    pub rate: i64,
    pub contractor: bool,
    pub part_time: bool,
    /// Home state, which sets the state income tax.
    pub state: Option<&'a str>,
}

impl From<PersonRecord> for Person {
    fn from(record: PersonRecord) -> Self {
        Self {
            repr: Repr::Stored(Box::new(record)),
        }
    }
}

impl From<Profile> for Person {
    fn from(profile: Profile) -> Self {
        Self {
            repr: Repr::Compact(profile),
        }
    }
}

impl Person {
    pub fn id(&self) -> &str {
        match &self.repr {
            Repr::Compact(p) => p.id(),
            Repr::Stored(r) => &r.individual.id,
        }
    }

    pub fn profile(&self) -> Option<&Profile> {
        match &self.repr {
            Repr::Compact(p) => Some(p),
            Repr::Stored(_) => None,
        }
    }

    pub fn profile_mut(&mut self) -> Option<&mut Profile> {
        match &mut self.repr {
            Repr::Compact(p) => {
                p.forget_record();
                Some(p)
            }
            Repr::Stored(_) => None,
        }
    }

    /// Both records, generated for a compact person (and not kept).
    pub fn record(&self) -> std::borrow::Cow<'_, PersonRecord> {
        match &self.repr {
            Repr::Compact(p) => p.cached_record().map_or_else(
                || std::borrow::Cow::Owned(p.record()),
                std::borrow::Cow::Borrowed,
            ),
            Repr::Stored(r) => std::borrow::Cow::Borrowed(r),
        }
    }

    pub fn individual_body(&self) -> Individual {
        match &self.repr {
            Repr::Compact(p) => p.individual(),
            Repr::Stored(r) => r.individual.clone(),
        }
    }

    pub fn employment_body(&self) -> Employment {
        match &self.repr {
            Repr::Compact(p) => p.employment(),
            Repr::Stored(r) => r.employment.clone(),
        }
    }

    pub fn directory_entry(&self) -> DirectoryEntry {
        match &self.repr {
            Repr::Compact(p) => p.directory_entry(),
            Repr::Stored(r) => r.directory_entry(),
        }
    }

    pub fn is_active(&self) -> bool {
        match &self.repr {
            Repr::Compact(p) => p.is_active(),
            Repr::Stored(r) => r.employment.is_active.unwrap_or(true),
        }
    }

    pub fn department(&self) -> Option<&str> {
        match &self.repr {
            Repr::Compact(p) => Some(p.department()),
            Repr::Stored(r) => r
                .employment
                .department
                .as_ref()
                .and_then(|d| d.name.as_deref()),
        }
    }

    pub fn has_manager(&self) -> bool {
        match &self.repr {
            Repr::Compact(p) => p.manager().is_some(),
            Repr::Stored(r) => r.employment.manager.is_some(),
        }
    }

    /// Start and end of employment; `None` where unknown or unparseable.
    pub fn tenure(&self) -> (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>) {
        match &self.repr {
            Repr::Compact(p) => (Some(p.start()), p.end()),
            Repr::Stored(r) => {
                let parse = |d: &Option<String>| d.as_deref().and_then(|d| d.parse().ok());
                (
                    parse(&r.employment.start_date),
                    parse(&r.employment.end_date),
                )
            }
        }
    }

    /// Leaves the company today.
    pub fn terminate(&mut self, today: chrono::NaiveDate) {
        if let Some(profile) = self.profile_mut() {
            profile.terminate(today);
            return;
        }
        self.employment.is_active = Some(false);
        self.employment.employment_status = Some("terminated".to_owned());
        self.employment.end_date = Some(super::seed::date(today));
    }

    pub fn pay_basis(&self) -> PayBasis<'_> {
        match &self.repr {
            Repr::Compact(p) => p.pay_basis(),
            Repr::Stored(r) => {
                let e = &r.employment;
                let income = e.income.as_ref();
                PayBasis {
                    hourly: income.and_then(|i| i.unit.as_deref()) == Some("hourly"),
                    rate: income.and_then(|i| i.amount).unwrap_or(5_000_000),
                    contractor: e.employment.as_ref().and_then(|t| t.kind.as_deref())
                        == Some("contractor"),
                    part_time: e.employment.as_ref().and_then(|t| t.subtype.as_deref())
                        == Some("part_time"),
                    state: r
                        .individual
                        .residence
                        .as_ref()
                        .and_then(|l| l.state.as_deref()),
                }
            }
        }
    }
}

/// Reading a compact person's fields directly generates its records and keeps
/// them with the person; the endpoints use the methods above, which do not.
impl std::ops::Deref for Person {
    type Target = PersonRecord;

    fn deref(&self) -> &PersonRecord {
        match &self.repr {
            Repr::Compact(p) => p.kept_record(),
            Repr::Stored(r) => r,
        }
    }
}

/// Writing a field stores the person in full from then on.
impl std::ops::DerefMut for Person {
    fn deref_mut(&mut self) -> &mut PersonRecord {
        if let Repr::Compact(p) = &mut self.repr {
            let record = p.take_record();
            self.repr = Repr::Stored(Box::new(record));
        }
        match &mut self.repr {
            Repr::Stored(r) => r,
            Repr::Compact(_) => unreachable!("stored just above"),
        }
    }
}

impl PartialEq for Person {
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Compact(a), Repr::Compact(b)) => a == b,
            _ => *self.record() == *other.record(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Money {
    pub amount: i64,
    pub currency: &'static str,
}

impl Money {
    pub fn usd(amount: i64) -> Self {
        Self {
            amount,
            currency: "usd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayPeriod {
    pub start_date: String,
    pub end_date: String,
}

/// `/employer/payment` item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payment {
    pub id: String,
    pub pay_period: PayPeriod,
    pub pay_date: String,
    pub debit_date: String,
    pub company_debit: Money,
    pub gross_pay: Money,
    pub net_pay: Money,
    pub employer_taxes: Money,
    pub employee_taxes: Money,
    pub individual_ids: Vec<String>,
    pub pay_group_ids: Vec<String>,
    pub pay_frequencies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Earning {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: i64,
    pub currency: &'static str,
    pub hours: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tax {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub employer: bool,
    pub amount: i64,
    pub currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deduction {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub pre_tax: bool,
    pub amount: i64,
    pub currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub amount: i64,
    pub currency: &'static str,
}

/// `/employer/pay-statement` item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayStatement {
    pub individual_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payment_method: String,
    pub total_hours: Option<f64>,
    pub gross_pay: Money,
    pub net_pay: Money,
    pub earnings: Vec<Earning>,
    pub taxes: Vec<Tax>,
    pub employee_deductions: Vec<Deduction>,
    pub employer_contributions: Vec<Contribution>,
}

/// The people a payroll paid: the staff of its entity as they were when it
/// ran, less those not employed during its pay period. Payments of one
/// entity share the staff list for as long as nobody in it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Paid {
    staff: Arc<Vec<Arc<Person>>>,
    period: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

impl Paid {
    /// Whoever of `staff` was employed at some point from `start` to `end`.
    pub fn employed_during(
        staff: Arc<Vec<Arc<Person>>>,
        start: chrono::NaiveDate,
        end: chrono::NaiveDate,
    ) -> Self {
        Self {
            staff,
            period: Some((start, end)),
        }
    }

    pub fn staff(&self) -> &Arc<Vec<Arc<Person>>> {
        &self.staff
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Person>> + '_ {
        self.staff.iter().filter(move |p| {
            self.period.is_none_or(|(start, end)| {
                let (started, left) = p.tenure();
                started.is_none_or(|s| s <= end) && left.is_none_or(|e| e >= start)
            })
        })
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromIterator<Arc<Person>> for Paid {
    fn from_iter<I: IntoIterator<Item = Arc<Person>>>(people: I) -> Self {
        Self {
            staff: Arc::new(people.into_iter().collect()),
            period: None,
        }
    }
}

/// A payment's statements: as given (sandbox), or generated when read from
/// the people paid, as they were then, and a seed. Storing a whole fleet's
/// statements would take gigabytes; the people are shared with the roster.
#[derive(Debug, Clone, PartialEq)]
pub enum Statements {
    Stored(Arc<Vec<PayStatement>>),
    Derived {
        /// Seeds each statement's generator with the person's position.
        seed: u64,
        frequency: PayFrequency,
        paid: Arc<Paid>,
    },
}

impl Statements {
    pub fn list(&self) -> Vec<PayStatement> {
        match self {
            Statements::Stored(list) => list.as_ref().clone(),
            Statements::Derived {
                seed,
                frequency,
                paid,
            } => paid
                .iter()
                .enumerate()
                .map(|(i, person)| {
                    let mut rng = super::seed::stream(*seed, i as u64);
                    super::seed::pay_statement(&mut rng, person, *frequency)
                })
                .collect(),
        }
    }

    /// What `list` adds up to, without building the statements.
    pub fn totals(&self) -> Totals {
        match self {
            Statements::Stored(list) => list.iter().fold(Totals::default(), |sum, s| {
                let (employer, employee): (Vec<&Tax>, Vec<&Tax>) =
                    s.taxes.iter().partition(|t| t.employer);
                sum.add(&Totals {
                    gross: s.gross_pay.amount,
                    net: s.net_pay.amount,
                    employer_taxes: employer.iter().map(|t| t.amount).sum(),
                    employee_taxes: employee.iter().map(|t| t.amount).sum(),
                })
            }),
            Statements::Derived {
                seed,
                frequency,
                paid,
            } => paid
                .iter()
                .enumerate()
                .fold(Totals::default(), |sum, (i, person)| {
                    let mut rng = super::seed::stream(*seed, i as u64);
                    sum.add(&super::seed::pay_figures(&mut rng, person, *frequency).totals())
                }),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Statements::Stored(list) => list.len(),
            Statements::Derived { paid, .. } => paid.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn individual_ids(&self) -> Vec<String> {
        match self {
            Statements::Stored(list) => list.iter().map(|s| s.individual_id.clone()).collect(),
            Statements::Derived { paid, .. } => paid.iter().map(|p| p.id().to_owned()).collect(),
        }
    }
}

/// A payment's sums over its statements, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub gross: i64,
    pub net: i64,
    pub employer_taxes: i64,
    pub employee_taxes: i64,
}

impl Totals {
    fn add(self, other: &Totals) -> Totals {
        Totals {
            gross: self.gross + other.gross,
            net: self.net + other.net,
            employer_taxes: self.employer_taxes + other.employer_taxes,
            employee_taxes: self.employee_taxes + other.employee_taxes,
        }
    }
}

/// What a payment is besides its statements; `PaymentRecord::payment_body`
/// spells it out as Finch returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentHeader {
    pub id: String,
    pub start_date: chrono::NaiveDate,
    pub end_date: chrono::NaiveDate,
    pub pay_date: chrono::NaiveDate,
    pub debit_date: chrono::NaiveDate,
    pub frequency: PayFrequency,
    pub totals: Totals,
}

/// A payment with its statements, as the provider stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub payment: PaymentHeader,
    pub statements: Statements,
    /// Index of the entity that ran this payroll in its connection's entity list.
    pub entity: usize,
}

impl PaymentRecord {
    /// A payment whose totals are those of its statements, so that they
    /// always add up.
    pub fn new(
        id: String,
        run: &super::spec::PayRun,
        statements: Statements,
        entity: usize,
    ) -> Self {
        Self {
            payment: PaymentHeader {
                id,
                start_date: run.start,
                end_date: run.end,
                pay_date: run.pay_date,
                debit_date: run.debit_date(),
                frequency: run.frequency,
                totals: statements.totals(),
            },
            statements,
            entity,
        }
    }

    /// `/employer/payment`'s item, with the ids of the people it paid.
    pub fn payment_body(&self) -> Payment {
        let h = &self.payment;
        let date = super::seed::date;
        Payment {
            id: h.id.clone(),
            pay_period: PayPeriod {
                start_date: date(h.start_date),
                end_date: date(h.end_date),
            },
            pay_date: date(h.pay_date),
            debit_date: date(h.debit_date),
            company_debit: Money::usd(h.totals.gross + h.totals.employer_taxes),
            gross_pay: Money::usd(h.totals.gross),
            net_pay: Money::usd(h.totals.net),
            employer_taxes: Money::usd(h.totals.employer_taxes),
            employee_taxes: Money::usd(h.totals.employee_taxes),
            individual_ids: self.statements.individual_ids(),
            pay_group_ids: Vec::new(),
            pay_frequencies: vec![h.frequency.as_str().to_owned()],
        }
    }
}

/// Everything one employer's payroll system holds. Both the provider state and
/// Finch's synced copy of it are one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub company: Company,
    /// In the provider's order, which is the directory's order. Shared with
    /// the synced copy and with the payments that paid them until edited.
    pub people: Vec<Arc<Person>>,
    /// Oldest first.
    pub payments: Vec<PaymentRecord>,
}

impl Dataset {
    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id() == id).map(AsRef::as_ref)
    }

    /// Copies the person first if a payment or the synced copy shares them.
    pub fn person_mut(&mut self, id: &str) -> Option<&mut Person> {
        self.people
            .iter_mut()
            .find(|p| p.id() == id)
            .map(Arc::make_mut)
    }

    pub fn payment(&self, id: &str) -> Option<&PaymentRecord> {
        self.payments.iter().find(|p| p.payment.id == id)
    }
}
