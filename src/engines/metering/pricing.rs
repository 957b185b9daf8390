//! USD prices per million tokens, per model: shipped defaults for current
//! OpenAI models (list prices when this was written; check them against your
//! contract), overridden or extended by `[pricing."MODEL"]`.

use std::collections::HashMap;

use crate::config::Price;
use crate::vocab::Usage;

/// `(model, input, cached input, output)` in USD per million tokens.
const DEFAULTS: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 0.125, 10.0),
    ("gpt-5-mini", 0.25, 0.025, 2.0),
    ("gpt-5-nano", 0.05, 0.005, 0.40),
    ("gpt-4.1", 2.0, 0.50, 8.0),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40),
    ("gpt-4o", 2.50, 1.25, 10.0),
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    ("o1", 15.0, 7.50, 60.0),
    ("o3", 2.0, 0.50, 8.0),
    ("o3-mini", 1.10, 0.55, 4.40),
    ("o4-mini", 1.10, 0.275, 4.40),
    ("gpt-4-turbo", 10.0, 10.0, 30.0),
    ("gpt-4", 30.0, 30.0, 60.0),
    ("gpt-3.5-turbo", 0.50, 0.50, 1.50),
    ("text-embedding-3-small", 0.02, 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.10, 0.0),
];

pub struct Pricing {
    prices: HashMap<String, Price>,
}

impl Pricing {
    pub fn new(overrides: &HashMap<String, Price>) -> Self {
        let mut prices: HashMap<String, Price> = DEFAULTS
            .iter()
            .map(|(model, input, cached, output)| {
                let price = Price {
                    input_per_1m: *input,
                    cached_input_per_1m: Some(*cached),
                    output_per_1m: *output,
                };
                ((*model).to_owned(), price)
            })
            .collect();
        prices.extend(
            overrides
                .iter()
                .map(|(model, price)| (model.clone(), *price)),
        );
        Self { prices }
    }

    /// The price of a model: its own entry, else the longest priced name it
    /// starts with (`gpt-4o-2024-08-06` is priced as `gpt-4o`).
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.prices.get(model).or_else(|| {
            self.prices
                .iter()
                .filter(|(name, _)| model.starts_with(name.as_str()))
                .max_by_key(|(name, _)| name.len())
                .map(|(_, price)| price)
        })
    }

    /// USD for one call's usage; 0 for an unpriced model.
    pub fn cost(&self, model: &str, usage: &Usage) -> f64 {
        self.price(model).map_or(0.0, |price| usage.cost_at(price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_usage_times_price_with_cached_tokens_at_their_rate() {
        let pricing = Pricing::new(&HashMap::new());
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            cached_tokens: 400_000,
        };
        // 600k fresh x 2.50 + 400k cached x 1.25 + 500k x 10.00, per million.
        let cost = pricing.cost("gpt-4o", &usage);
        assert!((cost - (1.5 + 0.5 + 5.0)).abs() < 1e-9, "{cost}");
        // Dated snapshots price as their family; the longest prefix wins.
        assert_eq!(
            pricing.price("gpt-4o-2024-08-06").unwrap().input_per_1m,
            2.50
        );
        assert_eq!(
            pricing
                .price("gpt-4o-mini-2024-07-18")
                .unwrap()
                .input_per_1m,
            0.15
        );
        assert_eq!(pricing.cost("my-local-llama", &usage), 0.0);
    }

    #[test]
    fn config_overrides_and_extends() {
        let overrides = HashMap::from([
            (
                "gpt-4o".to_owned(),
                Price {
                    input_per_1m: 1.0,
                    cached_input_per_1m: None,
                    output_per_1m: 2.0,
                },
            ),
            (
                "llama-70b".to_owned(),
                Price {
                    input_per_1m: 0.5,
                    cached_input_per_1m: None,
                    output_per_1m: 0.5,
                },
            ),
        ]);
        let pricing = Pricing::new(&overrides);
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cached_tokens: 500_000,
        };
        // No cached price: cached tokens at the input price.
        assert!((pricing.cost("gpt-4o", &usage) - 3.0).abs() < 1e-9);
        assert!((pricing.cost("llama-70b", &usage) - 1.0).abs() < 1e-9);
    }
}
