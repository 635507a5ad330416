//! `--gpu SPEC`: which host adapters a guest sees.

use std::fmt;
use std::str::FromStr;

use dxvmm_host_backend::AdapterInfo;
use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::frame::MAX_ADAPTERS;

/// One item of a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Position in `dxvmm gpus`.
    Index(usize),
    /// `HIGH:LOW` as `dxvmm gpus` prints it.
    Luid(WinLuid),
    /// Part of the adapter's name, any case.
    Name(String),
}

/// Which adapters the guest sees: all of them, none (no device), or a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuSelection {
    #[default]
    All,
    None,
    List(Vec<Item>),
}

/// A selection that names no host adapter, or too many.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("no host GPU matches '{0}' (see `dxvmm gpus`)")]
    NoMatch(String),
    #[error("the guest can see at most {MAX_ADAPTERS} GPUs; {0} were selected")]
    TooMany(usize),
}

impl FromStr for GpuSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => return Err("empty GPU list (use 'all', 'none' or a list)".into()),
            "all" => return Ok(GpuSelection::All),
            "none" => return Ok(GpuSelection::None),
            _ => {}
        }
        let mut items = Vec::new();
        for word in s.split(',').map(str::trim) {
            if word.is_empty() {
                return Err(format!("empty item in GPU list '{s}'"));
            }
            items.push(parse_item(word));
        }
        Ok(GpuSelection::List(items))
    }
}

fn parse_item(word: &str) -> Item {
    if let Ok(i) = word.parse::<usize>() {
        return Item::Index(i);
    }
    if let Some((high, low)) = word.split_once(':') {
        if let (Ok(b), Ok(a)) = (u32::from_str_radix(high, 16), u32::from_str_radix(low, 16)) {
            return Item::Luid(WinLuid { a, b });
        }
    }
    Item::Name(word.to_lowercase())
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Index(i) => write!(f, "{i}"),
            Item::Luid(l) => write!(f, "{:08x}:{:08x}", l.b, l.a),
            Item::Name(n) => f.write_str(n),
        }
    }
}

impl GpuSelection {
    /// The LUIDs of the selected adapters, in the host's order, each once.
    pub fn resolve(&self, adapters: &[AdapterInfo]) -> Result<Vec<WinLuid>, SelectError> {
        let picked: Vec<WinLuid> = match self {
            GpuSelection::None => return Ok(Vec::new()),
            GpuSelection::All => adapters.iter().map(|a| a.luid).collect(),
            GpuSelection::List(items) => {
                let mut chosen = vec![false; adapters.len()];
                for item in items {
                    let mut any = false;
                    for (i, a) in adapters.iter().enumerate() {
                        let hit = match item {
                            Item::Index(n) => *n == i,
                            Item::Luid(l) => *l == a.luid,
                            Item::Name(n) => a.name.to_lowercase().contains(n.as_str()),
                        };
                        if hit {
                            chosen[i] = true;
                            any = true;
                        }
                    }
                    if !any {
                        return Err(SelectError::NoMatch(item.to_string()));
                    }
                }
                adapters
                    .iter()
                    .zip(chosen)
                    .filter(|(_, c)| *c)
                    .map(|(a, _)| a.luid)
                    .collect()
            }
        };
        if picked.len() > MAX_ADAPTERS {
            return Err(SelectError::TooMany(picked.len()));
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_host_backend::{Backend, SoftBackend};

    fn adapters() -> Vec<AdapterInfo> {
        let mut a = SoftBackend::new().adapters();
        let mut b = a[0].clone();
        b.name = "Second GPU".into();
        b.luid = WinLuid { a: 5, b: 0x77 };
        a.push(b);
        a
    }

    #[test]
    fn all_none_and_lists() {
        let ad = adapters();
        let all: GpuSelection = "all".parse().unwrap();
        assert_eq!(all.resolve(&ad).unwrap().len(), 2);
        let none: GpuSelection = "none".parse().unwrap();
        assert!(none.resolve(&ad).unwrap().is_empty());
        let by_index: GpuSelection = "1".parse().unwrap();
        assert_eq!(by_index.resolve(&ad).unwrap(), vec![ad[1].luid]);
        let by_luid: GpuSelection = "00000077:00000005".parse().unwrap();
        assert_eq!(by_luid.resolve(&ad).unwrap(), vec![ad[1].luid]);
        let by_name: GpuSelection = "second, 0".parse().unwrap();
        // Host order, each once.
        assert_eq!(by_name.resolve(&ad).unwrap(), vec![ad[0].luid, ad[1].luid]);
    }

    #[test]
    fn bad_selections_are_clear_errors() {
        let ad = adapters();
        let nope: GpuSelection = "radeon".parse().unwrap();
        assert_eq!(
            nope.resolve(&ad).unwrap_err().to_string(),
            "no host GPU matches 'radeon' (see `dxvmm gpus`)"
        );
        let idx: GpuSelection = "7".parse().unwrap();
        assert!(idx.resolve(&ad).is_err());
        assert!("".parse::<GpuSelection>().is_err());
        assert!("0,,1".parse::<GpuSelection>().is_err());
    }
}
