//! Products to suggest after a purchase: "people who bought this also bought", learnt from the
//! shop's `Order Completed` events, never suggesting what the person already has.
//!
//! # Design
//!
//! Item-to-item co-purchase similarity, the classic recommender of online shops: it needs no
//! model training, explains itself (every suggestion says which purchase it comes *because* of)
//! and works from purchase history alone, the data a shop has for the purpose of selling.
//!
//! Two products are similar when the same *people* buy both, whether in one order or months
//! apart: the similarity of `a` and `b` is the cosine over customers,
//! `co_buyers(a, b) / sqrt(buyers(a) × buyers(b))`, so a best-seller bought by everyone is not
//! similar to everything. A person counts once per product however often they bought it.
//!
//! Only pairs that co-occur are computed (sparse), and a pair needs at least [`MIN_CO_BUYERS`]
//! people who bought both: one person's basket is an anecdote, and suggesting from it would also
//! tell a customer what one other identifiable customer bought. A profile with more than
//! [`MAX_PRODUCTS_PER_PROFILE`] distinct products (a reseller, a test account) is left out: it
//! says nothing about taste and its pairs grow with the square of its purchases.
//!
//! For a person, each candidate's score is the *sum* of its similarities to what they bought, so
//! a record close to several of their purchases ranks above one close to a single one; the
//! `because` is the purchase it is most similar to. Ties are broken by product id, and sums are
//! taken in a fixed order, so the same history always gives the same suggestions.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The fewest people who must have bought both products for one to be suggested from the other.
pub const MIN_CO_BUYERS: u32 = 2;

/// Profiles with more distinct products than this are left out of the similarities.
pub const MAX_PRODUCTS_PER_PROFILE: usize = 500;

/// A product as an `Order Completed` event lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The shop's product id.
    pub product_id: String,
    /// Its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Its category (a music style in the demo shop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Its unit price in the order's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
}

/// The products of an `Order Completed` event, from its `properties.products`. Lines without a
/// `product_id` are skipped; a numeric id is read as its decimal text; fields of the wrong type
/// are left out rather than losing the line.
pub fn products_of(properties: &serde_json::Value) -> Vec<Product> {
    let Some(lines) = properties.get("products").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    let text = |line: &serde_json::Value, key: &str| line.get(key).and_then(|v| v.as_str()).map(str::to_string);
    lines
        .iter()
        .filter_map(|line| {
            let product_id = match line.get("product_id")? {
                serde_json::Value::String(s) if !s.is_empty() => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(Product {
                product_id,
                name: text(line, "name"),
                artist: text(line, "artist"),
                category: text(line, "category"),
                price: line.get("price").and_then(|v| v.as_f64()),
            })
        })
        .collect()
}

/// A suggested product.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    /// The product, as last seen in an order.
    #[serde(flatten)]
    pub product: Product,
    /// The sum of its similarities to what the person bought (each between 0 and 1).
    pub score: f64,
    /// The purchase it is most similar to.
    pub because: String,
}

/// Co-purchase similarities between products.
#[derive(Clone, Debug, Default)]
pub struct CoPurchase {
    /// Products by index, as last seen in an order (the newest name wins).
    products: Vec<Product>,
    index: HashMap<String, u32>,
    /// For each product, its similar products and their similarity, by index.
    neighbours: Vec<Vec<(u32, f64)>>,
}

impl CoPurchase {
    /// Learns similarities from orders: each item is a profile and the products of one of its
    /// `Order Completed` events (see [`products_of`]), oldest first.
    pub fn build(orders: impl IntoIterator<Item = (i64, Vec<Product>)>) -> CoPurchase {
        let mut products = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut bought: HashMap<i64, BTreeSet<u32>> = HashMap::new();
        for (profile, lines) in orders {
            let basket = bought.entry(profile).or_default();
            for product in lines {
                let i = match index.get(&product.product_id) {
                    Some(&i) => {
                        products[i as usize] = product;
                        i
                    }
                    None => {
                        let i = products.len() as u32;
                        index.insert(product.product_id.clone(), i);
                        products.push(product);
                        i
                    }
                };
                basket.insert(i);
            }
        }

        let mut buyers = vec![0u32; products.len()];
        let mut co_buyers: HashMap<(u32, u32), u32> = HashMap::new();
        for basket in bought.values().filter(|b| b.len() <= MAX_PRODUCTS_PER_PROFILE) {
            let basket: Vec<u32> = basket.iter().copied().collect();
            for (n, &a) in basket.iter().enumerate() {
                buyers[a as usize] += 1;
                for &b in &basket[n + 1..] {
                    *co_buyers.entry((a, b)).or_default() += 1;
                }
            }
        }

        let mut neighbours = vec![Vec::new(); products.len()];
        for ((a, b), both) in co_buyers {
            if both < MIN_CO_BUYERS {
                continue;
            }
            let similarity = f64::from(both) / (f64::from(buyers[a as usize]) * f64::from(buyers[b as usize])).sqrt();
            neighbours[a as usize].push((b, similarity));
            neighbours[b as usize].push((a, similarity));
        }
        CoPurchase {
            products,
            index,
            neighbours,
        }
    }

    /// At most `k` products to suggest to someone who bought `bought` (product ids, in any
    /// order, repeats and unknown ids allowed), best first, none of which they bought.
    pub fn suggest(&self, bought: &[String], k: usize) -> Vec<Suggestion> {
        let owned: BTreeSet<u32> = bought.iter().filter_map(|id| self.index.get(id).copied()).collect();
        // Summed in product-id order so float rounding, hence ranking, never depends on the
        // order the history came in.
        let mut owned_by_id: Vec<u32> = owned.iter().copied().collect();
        owned_by_id.sort_by(|&a, &b| self.id(a).cmp(self.id(b)));

        // candidate -> (score, best similarity, because)
        let mut candidates: BTreeMap<u32, (f64, f64, u32)> = BTreeMap::new();
        for &from in &owned_by_id {
            for &(to, similarity) in &self.neighbours[from as usize] {
                if owned.contains(&to) {
                    continue;
                }
                let entry = candidates.entry(to).or_insert((0.0, 0.0, from));
                entry.0 += similarity;
                // Strictly greater: on a tie the earlier product id stays the reason.
                if similarity > entry.1 {
                    entry.1 = similarity;
                    entry.2 = from;
                }
            }
        }

        let mut ranked: Vec<(u32, f64, u32)> = candidates
            .into_iter()
            .map(|(to, (score, _, because))| (to, score, because))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| self.id(a.0).cmp(self.id(b.0))));
        ranked
            .into_iter()
            .take(k)
            .map(|(to, score, because)| Suggestion {
                product: self.products[to as usize].clone(),
                score,
                because: self.id(because).to_string(),
            })
            .collect()
    }

    fn id(&self, i: u32) -> &str {
        &self.products[i as usize].product_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(id: &str) -> Product {
        Product {
            product_id: id.into(),
            name: Some(format!("Album {id}")),
            artist: None,
            category: None,
            price: None,
        }
    }

    fn order(profile: i64, ids: &[&str]) -> (i64, Vec<Product>) {
        (profile, ids.iter().map(|id| p(id)).collect())
    }

    fn ids(bought: &[&str]) -> Vec<String> {
        bought.iter().map(|s| s.to_string()).collect()
    }

    /// Buyers: a = {1, 2, 3, 5}, b = {1, 2, 3, 6}, c = {1, 4, 5, 6}, d = {3, 4}.
    /// Co-buyers: a–b 3, a–c 2, b–c 2; a–d, b–d, c–d 1 each (below the minimum).
    /// So a–b = 3/√(4·4) = 0.75, a–c = b–c = 2/√(4·4) = 0.5, and d is similar to nothing.
    fn shop() -> CoPurchase {
        CoPurchase::build([
            order(1, &["a", "b", "c"]),
            order(2, &["a", "b"]),
            // Buying the same records again does not make profile 2 count twice.
            order(2, &["b", "a"]),
            order(3, &["a", "b", "d"]),
            order(4, &["c", "d"]),
            // Two orders of one person: bought together all the same.
            order(5, &["a"]),
            order(5, &["c"]),
            order(6, &["b", "c"]),
        ])
    }

    fn scores(s: &[Suggestion]) -> Vec<(&str, f64, &str)> {
        s.iter()
            .map(|s| (s.product.product_id.as_str(), s.score, s.because.as_str()))
            .collect()
    }

    #[test]
    fn suggestions_follow_co_purchase_similarity() {
        let shop = shop();
        assert_eq!(
            scores(&shop.suggest(&ids(&["a"]), 5)),
            [("b", 0.75, "a"), ("c", 0.5, "a")]
        );
        // Close to both purchases: the similarities add up, the closer one is the reason.
        assert_eq!(scores(&shop.suggest(&ids(&["c", "a"]), 5)), [("b", 1.25, "a")]);
        // A tie is broken by product id.
        assert_eq!(
            scores(&shop.suggest(&ids(&["c"]), 5)),
            [("a", 0.5, "c"), ("b", 0.5, "c")]
        );
        assert_eq!(scores(&shop.suggest(&ids(&["c"]), 1)), [("a", 0.5, "c")]);
        // d's pairs each have one co-buyer: nothing to suggest from it.
        assert_eq!(shop.suggest(&ids(&["d"]), 5), []);
    }

    #[test]
    fn what_was_bought_is_never_suggested() {
        let shop = shop();
        let s = shop.suggest(&ids(&["a", "b", "zzz"]), 5);
        assert_eq!(scores(&s), [("c", 1.0, "a")]);
        assert_eq!(shop.suggest(&ids(&["a", "b", "c"]), 5), []);
    }

    #[test]
    fn the_same_history_gives_the_same_suggestions() {
        let forward = shop().suggest(&ids(&["a", "c", "a"]), 5);
        let orders = vec![
            order(6, &["c", "b"]),
            order(5, &["c"]),
            order(5, &["a"]),
            order(4, &["d", "c"]),
            order(3, &["d", "b", "a"]),
            order(2, &["a", "b"]),
            order(1, &["c", "b", "a"]),
        ];
        let reversed = CoPurchase::build(orders).suggest(&ids(&["c", "a"]), 5);
        assert_eq!(forward, reversed);
    }

    #[test]
    fn no_history_suggests_nothing() {
        let empty = CoPurchase::build(std::iter::empty());
        assert_eq!(empty.suggest(&ids(&["a"]), 5), []);
        assert_eq!(shop().suggest(&[], 5), []);
        assert_eq!(shop().suggest(&ids(&["a"]), 0), []);
    }

    #[test]
    fn suggestions_carry_the_product_as_last_ordered() {
        let mut renamed = p("b");
        renamed.name = Some("Blue Train (remastered)".into());
        let shop = CoPurchase::build([order(1, &["a", "b"]), order(2, &["a", "b"]), (3, vec![renamed])]);
        let s = shop.suggest(&ids(&["a"]), 1);
        assert_eq!(s[0].product.name.as_deref(), Some("Blue Train (remastered)"));
        assert_eq!(
            serde_json::to_value(&s[0]).unwrap(),
            json!({"product_id": "b", "name": "Blue Train (remastered)", "score": 2.0 / 6f64.sqrt(), "because": "a"})
        );
    }

    #[test]
    fn products_are_read_from_an_order_completed_event() {
        // The shape the demo shop sends (crates/cli/src/demo/generate.rs).
        let properties = json!({
            "order_id": "ord-1",
            "total": 42.9,
            "currency": "EUR",
            "products": [
                {"product_id": "alb-0312", "sku": "alb-0312-lp", "name": "Kind of Blue", "artist": "Miles Davis",
                 "category": "Jazz", "format": "Vinyle", "price": 24.9, "quantity": 1},
                {"product_id": 77, "name": "Gift card"},
                {"sku": "no-id", "name": "Skipped"},
                {"product_id": "alb-0500", "name": 12, "price": "cheap"}
            ]
        });
        assert_eq!(
            products_of(&properties),
            [
                Product {
                    product_id: "alb-0312".into(),
                    name: Some("Kind of Blue".into()),
                    artist: Some("Miles Davis".into()),
                    category: Some("Jazz".into()),
                    price: Some(24.9),
                },
                Product {
                    product_id: "77".into(),
                    name: Some("Gift card".into()),
                    artist: None,
                    category: None,
                    price: None,
                },
                Product {
                    product_id: "alb-0500".into(),
                    name: None,
                    artist: None,
                    category: None,
                    price: None,
                },
            ]
        );
        assert_eq!(products_of(&json!({"order_id": "ord-2"})), []);
    }
}
