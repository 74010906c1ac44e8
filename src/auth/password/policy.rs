//! Which passwords a user may choose: the rules of both presets (the parent module says why).

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use zxcvbn::{Score, zxcvbn};

use super::Secret;

/// Longest password accepted, in characters (Unicode code points after NFKC).
pub const MAX_LENGTH: usize = 128;

/// Names and e-mail parts shorter than this are not searched for in passwords.
const MIN_CONTEXT_WORD: usize = 3;

/// zxcvbn scores below this mean "guessable with 10^8 guesses or fewer".
const MIN_SCORE: Score = Score::Three;

/// A character class of the `complexity` preset, and the reason given when it is missing.
type CharacterClass = (fn(char) -> bool, Reason);

/// A symbol is any character that is neither a letter nor a digit, a space included.
const CHARACTER_CLASSES: [CharacterClass; 4] = [
    (char::is_lowercase, Reason::NoLowerCase),
    (char::is_uppercase, Reason::NoUpperCase),
    (char::is_numeric, Reason::NoDigit),
    (|c| !c.is_alphanumeric(), Reason::NoSymbol),
];

/// `auth.password.preset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Preset {
    /// 12 characters with lower case, upper case, a digit and a symbol.
    #[default]
    #[serde(rename = "complexity")]
    Complexity,
    /// 15 characters and no composition rules (NIST SP 800-63B-4 forbids them).
    #[serde(rename = "nist-800-63b")]
    Nist80063b,
}

impl Preset {
    /// The shortest password the preset allows; `min_length` may only raise it.
    pub const fn min_length(self) -> usize {
        match self {
            Self::Complexity => 12,
            Self::Nist80063b => 15,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Complexity => "complexity",
            Self::Nist80063b => "nist-800-63b",
        }
    }
}

/// The rules in force: a preset and its (possibly raised) minimum length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    preset: Preset,
    min_length: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            preset: Preset::default(),
            min_length: Preset::default().min_length(),
        }
    }
}

/// Whose password it is: words that must not appear in it and that make it easier to guess.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub user_name: &'a str,
    pub email: Option<&'a str>,
}

/// One failed rule. A refusal lists every rule that failed, in the order of this enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    TooShort {
        min: usize,
    },
    TooLong {
        max: usize,
    },
    NoLowerCase,
    NoUpperCase,
    NoDigit,
    NoSymbol,
    ContainsUserName,
    ContainsEmail,
    /// Common, leaked, or built from guessable patterns (zxcvbn score below 3).
    TooEasyToGuess,
}

impl Reason {
    /// What to do about it, in words for the person choosing the password.
    pub fn message(&self) -> String {
        match self {
            Self::TooShort { min } => format!("Use at least {min} characters."),
            Self::TooLong { max } => format!("Use at most {max} characters."),
            Self::NoLowerCase => "Add a lower-case letter.".into(),
            Self::NoUpperCase => "Add an upper-case letter.".into(),
            Self::NoDigit => "Add a digit, such as 7.".into(),
            Self::NoSymbol => "Add a symbol, such as ! ? # or a space.".into(),
            Self::ContainsUserName => "Don't use your user name in your password.".into(),
            Self::ContainsEmail => "Don't use your e-mail address in your password.".into(),
            Self::TooEasyToGuess => "This password is too common or too easy to guess: try a short sentence of unrelated words.".into(),
        }
    }
}

impl Policy {
    /// `min_length` may raise the preset's minimum, never lower it, and stays within
    /// [`MAX_LENGTH`].
    pub fn new(preset: Preset, min_length: Option<usize>) -> Result<Self, String> {
        let floor = preset.min_length();
        let min_length = min_length.unwrap_or(floor);
        if min_length < floor {
            return Err(format!(
                "min_length {min_length} is below the `{}` preset: use at least {floor}",
                preset.name()
            ));
        }
        if min_length > MAX_LENGTH {
            return Err(format!(
                "min_length {min_length} is above the longest password accepted ({MAX_LENGTH})"
            ));
        }
        Ok(Self { preset, min_length })
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    pub fn min_length(&self) -> usize {
        self.min_length
    }

    /// The rules in words, for the page where a password is chosen (the same rules
    /// [`Policy::check`] enforces).
    pub fn rules(&self) -> Vec<String> {
        let mut rules = vec![format!(
            "At least {} and at most {MAX_LENGTH} characters.",
            self.min_length
        )];
        if self.preset == Preset::Complexity {
            rules.push(
                "A lower-case letter, an upper-case letter, a digit and a symbol (a space counts)."
                    .into(),
            );
        }
        rules.push("Not your user name or e-mail address.".into());
        rules.push("Not a common or easily guessed password: a short sentence of unrelated words works well.".into());
        rules
    }

    /// Every rule `password` fails, or `Ok` when it passes them all.
    pub fn check(&self, password: &Secret, owner: &Owner<'_>) -> Result<(), Vec<Reason>> {
        let password = password.expose();
        let mut reasons = Vec::new();
        let length = password.chars().count();
        if length < self.min_length {
            reasons.push(Reason::TooShort {
                min: self.min_length,
            });
        }
        if length > MAX_LENGTH {
            reasons.push(Reason::TooLong { max: MAX_LENGTH });
        }
        if self.preset == Preset::Complexity {
            for (is_in_class, reason) in CHARACTER_CLASSES {
                if !password.chars().any(is_in_class) {
                    reasons.push(reason);
                }
            }
        }

        let lowered = Secret(password.to_lowercase());
        let user_name = context_word(owner.user_name);
        let email = owner.email.map(context_word);
        let local_part = email
            .as_deref()
            .and_then(|email| email.rsplit_once('@'))
            .map(|(local, _)| local.to_owned());
        let contains = |word: &str| {
            word.chars().count() >= MIN_CONTEXT_WORD && lowered.expose().contains(word)
        };
        if contains(&user_name) {
            reasons.push(Reason::ContainsUserName);
        }
        if email.as_deref().is_some_and(contains) || local_part.as_deref().is_some_and(contains) {
            reasons.push(Reason::ContainsEmail);
        }

        let context: Vec<&str> = [
            Some(user_name.as_str()),
            email.as_deref(),
            local_part.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|word| !word.is_empty())
        .collect();
        if zxcvbn(password, &context).score() < MIN_SCORE {
            reasons.push(Reason::TooEasyToGuess);
        }

        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// A name or address as the password is compared with it: NFKC, lower case, no outer spaces.
fn context_word(text: &str) -> String {
    text.trim().nfkc().collect::<String>().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Owner<'static> = Owner {
        user_name: "alice.m",
        email: Some("Alice.Martin@st-mary.example"),
    };

    fn complexity() -> Policy {
        Policy::new(Preset::Complexity, None).unwrap()
    }

    fn nist() -> Policy {
        Policy::new(Preset::Nist80063b, None).unwrap()
    }

    fn check(policy: Policy, password: &str) -> Result<(), Vec<Reason>> {
        policy.check(&Secret::new(password.to_owned()), &ALICE)
    }

    #[test]
    fn the_rules_in_words_follow_the_preset() {
        let rules = Policy::new(Preset::Complexity, Some(14)).unwrap().rules();
        assert_eq!(rules[0], "At least 14 and at most 128 characters.");
        assert!(rules[1].starts_with("A lower-case letter"));
        assert_eq!(rules.len(), 4);
        let rules = nist().rules();
        assert_eq!(rules[0], "At least 15 and at most 128 characters.");
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn strong_passwords_pass_both_presets() {
        for password in [
            "Violet kettle, 9 drums!",
            "Orbit-Cactus-71-Lantern",
            "correct horse battery staple 4 Kiwi?",
        ] {
            assert_eq!(check(complexity(), password), Ok(()), "{password}");
            assert_eq!(check(nist(), password), Ok(()), "{password}");
        }
        // No capitals, digits or symbols: only the NIST preset takes it.
        assert_eq!(check(nist(), "violetkettlenimbusdrums"), Ok(()));
    }

    #[test]
    fn each_composition_rule_is_reported_alone() {
        for (password, reason) in [
            ("VIOLET KETTLE, 9 DRUMS!", Reason::NoLowerCase),
            ("violet kettle, 9 drums!", Reason::NoUpperCase),
            ("Violet kettle, nine drums!", Reason::NoDigit),
            ("VioletKettle9DrumsNimbus", Reason::NoSymbol),
        ] {
            assert_eq!(
                check(complexity(), password),
                Err(vec![reason]),
                "{password}"
            );
            assert_eq!(check(nist(), password), Ok(()), "{password}");
        }
    }

    #[test]
    fn length_limits_for_each_preset() {
        // 12 characters: enough for `complexity`, not for `nist-800-63b`.
        let twelve = "Vq7#kettle!Z";
        assert_eq!(check(complexity(), twelve), Ok(()));
        assert_eq!(
            check(nist(), twelve),
            Err(vec![Reason::TooShort { min: 15 }])
        );
        assert_eq!(
            check(complexity(), "Vq7#kettle!"),
            Err(vec![Reason::TooShort { min: 12 }])
        );
        let raised = Policy::new(Preset::Complexity, Some(20)).unwrap();
        assert_eq!(
            check(raised, twelve),
            Err(vec![Reason::TooShort { min: 20 }])
        );

        let long = "Violet kettle, 9 drums! ".repeat(6);
        assert!(long.chars().count() > MAX_LENGTH);
        assert_eq!(
            check(complexity(), &long),
            Err(vec![Reason::TooLong { max: 128 }])
        );
        assert_eq!(check(nist(), &long[..MAX_LENGTH]), Ok(()));
    }

    #[test]
    fn sixty_four_character_passphrases_are_accepted() {
        let passphrase = "Seven purple umbrellas dance quietly above Lisbon at 4 o'clock!!";
        assert_eq!(passphrase.chars().count(), 64);
        assert_eq!(check(complexity(), passphrase), Ok(()));
        assert_eq!(check(nist(), passphrase), Ok(()));
    }

    #[test]
    fn a_refusal_lists_every_failed_rule() {
        // Three rules, and strong enough otherwise.
        assert_eq!(
            check(complexity(), "violetkettlenimbusdrums"),
            Err(vec![Reason::NoUpperCase, Reason::NoDigit, Reason::NoSymbol])
        );
        assert_eq!(
            check(complexity(), "kettle"),
            Err(vec![
                Reason::TooShort { min: 12 },
                Reason::NoUpperCase,
                Reason::NoDigit,
                Reason::NoSymbol,
                Reason::TooEasyToGuess,
            ])
        );
        assert_eq!(
            check(nist(), "kettle"),
            Err(vec![Reason::TooShort { min: 15 }, Reason::TooEasyToGuess])
        );
        assert_eq!(
            check(complexity(), ""),
            Err(vec![
                Reason::TooShort { min: 12 },
                Reason::NoLowerCase,
                Reason::NoUpperCase,
                Reason::NoDigit,
                Reason::NoSymbol,
                Reason::TooEasyToGuess,
            ])
        );
    }

    #[test]
    fn common_passwords_are_refused() {
        for password in [
            "Password123!",
            "Welcome2024!",
            "P@ssw0rd2024!",
            "Qwerty123456!",
            "Letmein2024#",
        ] {
            // They meet every composition rule: only their guessability gives them away.
            assert_eq!(
                check(complexity(), password),
                Err(vec![Reason::TooEasyToGuess]),
                "{password}"
            );
        }
        assert_eq!(
            check(nist(), "Password123!"),
            Err(vec![Reason::TooShort { min: 15 }, Reason::TooEasyToGuess])
        );
    }

    #[test]
    fn rules_judge_the_nfkc_form() {
        // 11 characters as typed; the `ﬀ` ligature makes it 12 after NFKC.
        let ligature = "Vq7#keﬀle!Z";
        assert_eq!(ligature.chars().count(), 11);
        assert_eq!(check(complexity(), ligature), Ok(()));
        // Full-width letters and digit: the same password as its ASCII form.
        assert_eq!(
            check(complexity(), "Ｖｉｏｌｅｔ kettle, ９ drums!"),
            Ok(())
        );
        assert_eq!(
            check(complexity(), "Ｐａｓｓｗｏｒｄ１２３！"),
            Err(vec![Reason::TooEasyToGuess])
        );
    }

    #[test]
    fn the_user_name_is_refused_in_any_case() {
        for password in [
            "Violet alice.m kettle 9 drums!",
            "Violet ALICE.M kettle 9 drums!",
            "Violet Ａｌｉｃｅ.m kettle 9 drums!",
        ] {
            assert_eq!(
                check(complexity(), password),
                Err(vec![Reason::ContainsUserName]),
                "{password}"
            );
            assert_eq!(
                check(nist(), password),
                Err(vec![Reason::ContainsUserName]),
                "{password}"
            );
        }
    }

    #[test]
    fn the_email_and_its_local_part_are_refused_in_any_case() {
        let owner = Owner {
            user_name: "nurse42",
            email: Some("A.Martin@St-Mary.example"),
        };
        for password in [
            "A.Martin loves 9 violet kettles!",
            "A.MARTIN@st-mary.EXAMPLE 9 Violet!",
        ] {
            assert_eq!(
                complexity().check(&Secret::new(password.into()), &owner),
                Err(vec![Reason::ContainsEmail]),
                "{password}"
            );
        }
        // A local part under 3 characters is not searched for; the whole address still is.
        let owner = Owner {
            user_name: "al",
            email: Some("jo@ward.example"),
        };
        let check = |password: &str| nist().check(&Secret::new(password.into()), &owner);
        assert_eq!(check("Always enjoy 9 violet kettles!"), Ok(()));
        assert_eq!(
            check("Jo@Ward.Example enjoys 9 violet kettles!"),
            Err(vec![Reason::ContainsEmail])
        );
    }

    #[test]
    fn min_length_can_only_be_raised() {
        assert_eq!(
            Policy::new(Preset::Complexity, Some(16))
                .unwrap()
                .min_length(),
            16
        );
        assert_eq!(
            Policy::new(Preset::Nist80063b, Some(15))
                .unwrap()
                .min_length(),
            15
        );
        assert!(Policy::new(Preset::Nist80063b, Some(14)).is_err());
        assert!(Policy::new(Preset::Complexity, Some(11)).is_err());
        assert!(Policy::new(Preset::Complexity, Some(MAX_LENGTH + 1)).is_err());
    }

    #[test]
    fn every_reason_reads_as_an_instruction() {
        let reasons = [
            Reason::TooShort { min: 12 },
            Reason::TooLong { max: 128 },
            Reason::NoLowerCase,
            Reason::NoUpperCase,
            Reason::NoDigit,
            Reason::NoSymbol,
            Reason::ContainsUserName,
            Reason::ContainsEmail,
            Reason::TooEasyToGuess,
        ];
        for reason in reasons {
            let message = reason.message();
            assert!(message.ends_with('.'), "{message}");
            assert!(message.chars().next().unwrap().is_uppercase(), "{message}");
        }
        assert_eq!(reasons[0].message(), "Use at least 12 characters.");
        assert_eq!(reasons[3].message(), "Add an upper-case letter.");
    }
}
