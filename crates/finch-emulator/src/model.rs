//! The records an emulated payroll system holds, in the shapes Finch's API returns.
//!
//! Every optional field is serialised as `null` rather than omitted, because
//! that is what Finch does and what clients must cope with.

use serde::{Deserialize, Serialize};

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

/// One person in the provider's system: Finch splits it over three endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
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

impl Person {
    pub fn id(&self) -> &str {
        &self.individual.id
    }

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

    pub fn is_active(&self) -> bool {
        self.employment.is_active.unwrap_or(true)
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

/// A payment with its statements, as the provider stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub payment: Payment,
    pub statements: Vec<PayStatement>,
    /// Index of the entity that ran this payroll in its connection's entity list.
    pub entity: usize,
}

impl PaymentRecord {
    /// Builds the payment totals from its statements so that they always add up.
    pub fn from_statements(
        id: String,
        pay_period: PayPeriod,
        pay_date: String,
        debit_date: String,
        statements: Vec<PayStatement>,
    ) -> Self {
        let gross: i64 = statements.iter().map(|s| s.gross_pay.amount).sum();
        let net: i64 = statements.iter().map(|s| s.net_pay.amount).sum();
        let employer_taxes: i64 = statements
            .iter()
            .flat_map(|s| &s.taxes)
            .filter(|t| t.employer)
            .map(|t| t.amount)
            .sum();
        let employee_taxes: i64 = statements
            .iter()
            .flat_map(|s| &s.taxes)
            .filter(|t| !t.employer)
            .map(|t| t.amount)
            .sum();
        let payment = Payment {
            id,
            pay_period,
            pay_date,
            debit_date,
            company_debit: Money::usd(gross + employer_taxes),
            gross_pay: Money::usd(gross),
            net_pay: Money::usd(net),
            employer_taxes: Money::usd(employer_taxes),
            employee_taxes: Money::usd(employee_taxes),
            individual_ids: statements.iter().map(|s| s.individual_id.clone()).collect(),
            pay_group_ids: Vec::new(),
            pay_frequencies: vec!["bi_weekly".to_owned()],
        };
        Self {
            payment,
            statements,
            entity: 0,
        }
    }
}

/// Everything one employer's payroll system holds. Both the provider state and
/// Finch's synced copy of it are one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub company: Company,
    /// In the provider's order, which is the directory's order.
    pub people: Vec<Person>,
    /// Oldest first.
    pub payments: Vec<PaymentRecord>,
}

impl Dataset {
    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id() == id)
    }

    pub fn person_mut(&mut self, id: &str) -> Option<&mut Person> {
        self.people.iter_mut().find(|p| p.id() == id)
    }

    pub fn payment(&self, id: &str) -> Option<&PaymentRecord> {
        self.payments.iter().find(|p| p.payment.id == id)
    }
}
