//! Kubernetes resource quantities (`100m`, `16Mi`, `1.5`, `2G`), validated
//! and compared so that an agent request can never exceed its limit.
//! Grammar: [resource.Quantity](https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A validated quantity; keeps the user's text and a comparable value.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    value: f64,
}

/// Why a quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?} (expected e.g. 50m, 0.5, 16Mi, 1Gi)")]
pub struct QuantityError(pub String);

impl Quantity {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError(s.chars().take(32).collect());
        let num_len = s.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.' || *b == b'+').count();
        let (num, suffix) = s.split_at(num_len);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." || num.starts_with("+.") {
            return Err(err());
        }
        let n: f64 = num.trim_start_matches('+').parse().map_err(|_| err())?;
        let mult = match suffix {
            "" => 1.0,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| err())?;
                10f64.powi(exp)
            }
            _ => return Err(err()),
        };
        Ok(Quantity { text: s.to_owned(), value: n * mult })
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.value.partial_cmp(&other.value)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(serde_json::Number),
        }
        let text = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::N(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_compares_units() {
        assert!(q("100m") < q("1"));
        assert!(q("16Mi") < q("32Mi"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("0.5") == q("500m"));
        assert!(q("1e3") == q("1k"));
        assert_eq!(q("64Mi").to_string(), "64Mi");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "m", "1.2.3", "10 Mi", "-1", "1mb", "Mi", "1x"] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad}");
        }
    }
}
