//! Plans (SPEC §5): named rate and concurrency limits from the config; every
//! account is on one, `default_plan` until an admin says otherwise.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use cloro_auth_core::PlanName;
use cloro_auth_core::wire::{PlanInfo, PlansResponse, QuotaPolicy, RateLimitPolicy};
use serde::Deserialize;

/// One plan's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's rate limit.
    pub rate_limit: RateLimitPolicy,
    /// Requests in flight per key, if limited.
    #[serde(default)]
    pub concurrency_limit: Option<NonZeroU32>,
    /// Units per calendar period (SPEC §11), per account unless it says
    /// `applies_to = "key"`.
    #[serde(default)]
    pub quota: Option<QuotaPolicy>,
}

/// Every plan and the default, validated: the default always exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plans {
    default_plan: PlanName,
    plans: BTreeMap<PlanName, Plan>,
}

/// A plan table that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlansError {
    /// `default_plan` names a plan that is not defined.
    #[error("default_plan `{0}` is not one of the configured plans")]
    UnknownDefault(PlanName),
}

impl Plans {
    /// The built-in table: `free`, 1000 requests per 3600 s, the default.
    pub fn builtin() -> Self {
        let free =
            PlanName::new("free").unwrap_or_else(|_| unreachable!("`free` is a valid plan name"));
        let rate_limit = RateLimitPolicy::new(nonzero(1000), nonzero(3600));
        Plans {
            default_plan: free,
            plans: BTreeMap::from([(
                free,
                Plan {
                    rate_limit,
                    concurrency_limit: None,
                    quota: None,
                },
            )]),
        }
    }

    /// A table from the config.
    ///
    /// # Errors
    /// When `default_plan` is not among `plans`.
    pub fn new(
        default_plan: PlanName,
        plans: BTreeMap<PlanName, Plan>,
    ) -> Result<Self, PlansError> {
        if !plans.contains_key(&default_plan) {
            return Err(PlansError::UnknownDefault(default_plan));
        }
        Ok(Plans {
            default_plan,
            plans,
        })
    }

    /// The default plan's name.
    pub fn default_plan(&self) -> PlanName {
        self.default_plan
    }

    /// A plan by name.
    pub fn get(&self, name: &PlanName) -> Option<&Plan> {
        self.plans.get(name)
    }

    /// The plan an account is on: its own if it still exists, else the default.
    /// (A plan removed from the config falls back to the default rather than
    /// locking its accounts out.)
    pub fn resolve(&self, account_plan: Option<PlanName>) -> (PlanName, &Plan) {
        let name = account_plan
            .filter(|name| self.plans.contains_key(name))
            .unwrap_or(self.default_plan);
        match self.plans.get(&name) {
            Some(plan) => (name, plan),
            None => unreachable!("the default plan exists (checked in Plans::new)"),
        }
    }

    /// `GET /admin/v1/plans`.
    pub fn to_response(&self) -> PlansResponse {
        PlansResponse {
            plans: self
                .plans
                .iter()
                .map(|(name, plan)| PlanInfo {
                    name: *name,
                    rate_limit: plan.rate_limit,
                    concurrency_limit: plan.concurrency_limit,
                    quota: plan.quota,
                })
                .collect(),
            default_plan: self.default_plan,
        }
    }
}

impl Default for Plans {
    fn default() -> Self {
        Self::builtin()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_free_plan() {
        let plans = Plans::builtin();
        let (name, plan) = plans.resolve(None);
        assert_eq!(name.as_str(), "free");
        assert_eq!(
            (
                plan.rate_limit.requests.get(),
                plan.rate_limit.per_seconds.get()
            ),
            (1000, 3600)
        );
    }

    #[test]
    fn default_must_exist_and_unknown_falls_back() {
        let pro = PlanName::new("pro").unwrap();
        assert_eq!(
            Plans::new(pro, BTreeMap::new()),
            Err(PlansError::UnknownDefault(pro))
        );
        let plans = Plans::builtin();
        assert_eq!(plans.resolve(Some(pro)).0.as_str(), "free");
    }
}
