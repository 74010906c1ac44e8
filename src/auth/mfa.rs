//! Which second factors an account may use, by role.
//!
//! **The threat.** A phishable factor on the accounts that matter most: a six-digit code can be
//! relayed by a look-alike site within its 30 seconds, a passkey cannot (it signs the origin).
//! A hospital may want physicians with access to every record on passkeys only, while the
//! front desk keeps an authenticator app.
//!
//! **The rule.** `auth.mfa.methods` lists the factors every account may use (default: all of
//! `webauthn`, `totp`, `recovery_code`); `auth.mfa.roles` narrows them per role. An account
//! whose roles appear there gets what **all** of its listed roles allow (the strictest wins).
//! Enrollment offers only allowed factors, and login accepts only allowed ones: an account
//! whose only enrolled factor is no longer allowed (a role changed) must enroll again
//! (`WG-AUTH-012`). Every list must hold `webauthn` or `totp`, since recovery codes alone are
//! no second factor, and a list that needs WebAuthn only requires `auth.webauthn`.
//!
//! **The standard.** NIST SP 800-63B-4 (AAL3 asks for a phishing-resistant authenticator;
//! agencies may require it for some users), OWASP ASVS 5 V6.6 (phishing-resistant MFA for
//! sensitive roles).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::events::Factor;

/// `auth.mfa` in gateway.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// The factors any account may use.
    pub methods: Vec<Factor>,
    /// Narrower lists for some roles.
    pub roles: BTreeMap<String, Vec<Factor>>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        Self {
            methods: vec![Factor::WebAuthn, Factor::Totp, Factor::RecoveryCode],
            roles: BTreeMap::new(),
        }
    }
}

impl MfaConfig {
    /// Checks the lists; `webauthn` says whether `auth.webauthn` is configured. The message
    /// names the key to fix.
    pub fn check(&self, webauthn: bool) -> Result<(), String> {
        let lists = std::iter::once(("auth.mfa.methods".to_owned(), &self.methods)).chain(
            self.roles
                .iter()
                .map(|(role, list)| (format!("auth.mfa.roles.{role}"), list)),
        );
        for (key, list) in lists {
            let usable = |f: &Factor| *f == Factor::Totp || (*f == Factor::WebAuthn && webauthn);
            if !list.iter().any(usable) {
                return Err(format!(
                    "{key}: must allow `totp`, or `webauthn` with auth.webauthn configured; recovery codes alone are no second factor"
                ));
            }
        }
        Ok(())
    }

    /// The factors an account with `roles` may use.
    pub fn allowed(&self, roles: &[String]) -> Vec<Factor> {
        let mut allowed = self.methods.clone();
        for role in roles {
            if let Some(list) = self.roles.get(role) {
                allowed.retain(|factor| list.contains(factor));
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> MfaConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn every_factor_is_allowed_by_default() {
        let mfa = MfaConfig::default();
        assert_eq!(
            mfa.allowed(&roles(&["nurse"])),
            [Factor::WebAuthn, Factor::Totp, Factor::RecoveryCode]
        );
        assert!(mfa.check(false).is_ok());
    }

    #[test]
    fn the_strictest_listed_role_wins() {
        let mfa = config(
            "roles:\n  physician: [webauthn, recovery_code]\n  admin: [webauthn]\n  desk: [totp, webauthn]\n",
        );
        assert_eq!(
            mfa.allowed(&roles(&["physician"])),
            [Factor::WebAuthn, Factor::RecoveryCode]
        );
        assert_eq!(
            mfa.allowed(&roles(&["physician", "admin"])),
            [Factor::WebAuthn]
        );
        assert_eq!(
            mfa.allowed(&roles(&["desk", "visitor"])),
            [Factor::WebAuthn, Factor::Totp]
        );
        assert_eq!(
            mfa.allowed(&[]),
            [Factor::WebAuthn, Factor::Totp, Factor::RecoveryCode]
        );
        assert!(mfa.check(true).is_ok());
    }

    #[test]
    fn a_list_without_a_real_factor_is_refused() {
        let only_codes = config("roles:\n  desk: [recovery_code]\n");
        let error = only_codes.check(true).unwrap_err();
        assert!(error.starts_with("auth.mfa.roles.desk: "), "{error}");
        let passkeys_off = config("methods: [webauthn, recovery_code]\n");
        let error = passkeys_off.check(false).unwrap_err();
        assert!(error.starts_with("auth.mfa.methods: "), "{error}");
        assert!(passkeys_off.check(true).is_ok());
    }

    #[test]
    fn unknown_methods_and_keys_are_refused() {
        assert!(serde_saphyr::from_str::<MfaConfig>("methods: [sms]\n").is_err());
        assert!(serde_saphyr::from_str::<MfaConfig>("required: false\n").is_err());
    }
}
