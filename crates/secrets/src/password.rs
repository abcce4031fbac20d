//! GetRandomPassword: passwords drawn from the CSPRNG (`sluice_crypto::random_bytes`) by
//! rejection sampling, so every allowed character is equally likely.

use sluice_core::AwsError;
use zeroize::Zeroizing;

/// AWS's punctuation set for GetRandomPassword.
pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The options of GetRandomPassword.
#[derive(Debug, Clone)]
pub struct PasswordOptions {
    /// Length, 1..=4096 (default 32).
    pub length: usize,
    /// Characters never to use.
    pub exclude_characters: String,
    /// No digits.
    pub exclude_numbers: bool,
    /// No punctuation.
    pub exclude_punctuation: bool,
    /// No uppercase letters.
    pub exclude_uppercase: bool,
    /// No lowercase letters.
    pub exclude_lowercase: bool,
    /// Allow the space character.
    pub include_space: bool,
    /// At least one character of every included type (default true).
    pub require_each_included_type: bool,
}

impl Default for PasswordOptions {
    fn default() -> Self {
        Self {
            length: 32,
            exclude_characters: String::new(),
            exclude_numbers: false,
            exclude_punctuation: false,
            exclude_uppercase: false,
            exclude_lowercase: false,
            include_space: false,
            require_each_included_type: true,
        }
    }
}

fn invalid(msg: &str) -> AwsError {
    AwsError::client("InvalidParameterException", msg)
}

/// A uniform index below `n` (n <= 256) from the CSPRNG.
fn uniform(n: usize, pool: &mut Vec<u8>) -> usize {
    debug_assert!(n > 0 && n <= 256);
    let limit = 256 - (256 % n);
    loop {
        if pool.is_empty() {
            *pool = sluice_crypto::random_bytes(64).to_vec();
        }
        let b = pool.pop().unwrap_or(0) as usize;
        if b < limit {
            return b % n;
        }
    }
}

/// Generates a password.
pub fn generate(o: &PasswordOptions) -> Result<Zeroizing<String>, AwsError> {
    if o.length == 0 || o.length > 4096 {
        return Err(invalid("PasswordLength must be between 1 and 4096."));
    }
    let excluded = |c: char| o.exclude_characters.contains(c);
    let mut classes: Vec<Vec<char>> = Vec::new();
    let mut add = |chars: &mut dyn Iterator<Item = char>| {
        let v: Vec<char> = chars.filter(|c| !excluded(*c)).collect();
        if !v.is_empty() {
            classes.push(v);
        }
    };
    if !o.exclude_lowercase {
        add(&mut ('a'..='z'));
    }
    if !o.exclude_uppercase {
        add(&mut ('A'..='Z'));
    }
    if !o.exclude_numbers {
        add(&mut ('0'..='9'));
    }
    if !o.exclude_punctuation {
        add(&mut PUNCTUATION.chars());
    }
    if o.include_space {
        add(&mut std::iter::once(' '));
    }
    let all: Vec<char> = classes.iter().flatten().copied().collect();
    if all.is_empty() {
        return Err(invalid(
            "The password can't be generated: every character type is excluded.",
        ));
    }
    if o.require_each_included_type && o.length < classes.len() {
        return Err(invalid(
            "The password length is too short to include a character of each included type.",
        ));
    }
    let mut pool = Vec::new();
    let mut out: Vec<char> = Vec::with_capacity(o.length);
    if o.require_each_included_type {
        for class in &classes {
            out.push(class[uniform(class.len(), &mut pool)]);
        }
    }
    while out.len() < o.length {
        out.push(all[uniform(all.len(), &mut pool)]);
    }
    // Shuffle so the required characters are not at the front (Fisher-Yates).
    for i in (1..out.len()).rev() {
        let j = if i < 256 {
            uniform(i + 1, &mut pool)
        } else {
            let hi = uniform(256, &mut pool);
            let lo = uniform(256, &mut pool);
            (hi * 256 + lo) % (i + 1)
        };
        out.swap(i, j);
    }
    let s: String = out.iter().collect();
    out.iter_mut().for_each(|c| *c = '\0');
    pool.iter_mut().for_each(|b| *b = 0);
    Ok(Zeroizing::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_32_characters_of_every_type() {
        for _ in 0..50 {
            let p = generate(&PasswordOptions::default()).unwrap();
            assert_eq!(p.chars().count(), 32);
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| PUNCTUATION.contains(c)));
            assert!(!p.contains(' '));
        }
    }

    #[test]
    fn exclusions_are_honoured() {
        let o = PasswordOptions {
            length: 200,
            exclude_characters: "abcXYZ019".into(),
            exclude_punctuation: true,
            include_space: true,
            ..Default::default()
        };
        let p = generate(&o).unwrap();
        assert_eq!(p.len(), 200);
        assert!(p.contains(' '));
        assert!(!p.chars().any(|c| "abcXYZ019".contains(c)));
        assert!(!p.chars().any(|c| PUNCTUATION.contains(c)));
        let digits = PasswordOptions {
            length: 64,
            exclude_lowercase: true,
            exclude_uppercase: true,
            exclude_punctuation: true,
            ..Default::default()
        };
        assert!(
            generate(&digits)
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_digit())
        );
    }

    #[test]
    fn impossible_requests_are_rejected() {
        let none = PasswordOptions {
            exclude_lowercase: true,
            exclude_uppercase: true,
            exclude_numbers: true,
            exclude_punctuation: true,
            ..Default::default()
        };
        assert_eq!(
            generate(&none).unwrap_err().code,
            "InvalidParameterException"
        );
        let short = PasswordOptions {
            length: 3,
            ..Default::default()
        };
        assert!(generate(&short).is_err());
        let short_ok = PasswordOptions {
            length: 3,
            require_each_included_type: false,
            ..Default::default()
        };
        assert_eq!(generate(&short_ok).unwrap().len(), 3);
        assert!(
            generate(&PasswordOptions {
                length: 0,
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(
            generate(&PasswordOptions {
                length: 4096,
                ..Default::default()
            })
            .unwrap()
            .len(),
            4096
        );
    }

    #[test]
    fn characters_are_roughly_uniform() {
        // 10 digits, 20_000 draws: every digit appears (a broken sampler that never yields
        // some digit fails; no statistical threshold that could flake).
        let o = PasswordOptions {
            length: 4096,
            exclude_lowercase: true,
            exclude_uppercase: true,
            exclude_punctuation: true,
            require_each_included_type: false,
            ..Default::default()
        };
        let p = generate(&o).unwrap();
        for d in '0'..='9' {
            assert!(p.contains(d), "digit {d} never drawn");
        }
    }
}
