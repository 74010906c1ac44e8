//! argon2id: hashing, verification, re-hash detection and the dummy verification for unknown
//! users (the parent module says why and with which parameters).

use argon2::password_hash::Error as PhcError;
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier,
    Version,
};

use super::Secret;
use crate::units::ByteSize;

/// OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1 at least.
const MIN_MEMORY_KIB: u32 = 19 * 1024;
const MIN_ITERATIONS: u32 = 2;
const MIN_PARALLELISM: u32 = 1;

/// What [`Hasher::dummy_verify`] hashes at start; its value does not matter, only its cost.
const DUMMY_PASSWORD: &[u8] = b"wardgate: the work an unknown user name costs";

/// argon2id parameters, at or above OWASP's floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashParams(Params);

impl HashParams {
    /// OWASP's floor, and the default.
    pub const OWASP_MINIMUM: Self =
        match Params::new(MIN_MEMORY_KIB, MIN_ITERATIONS, MIN_PARALLELISM, None) {
            Ok(params) => Self(params),
            Err(_) => Self(Params::DEFAULT),
        };

    /// Refuses anything below OWASP's floor, and what argon2 itself refuses.
    pub fn new(memory: ByteSize, iterations: u32, parallelism: u32) -> Result<Self, String> {
        if !memory.0.is_multiple_of(1024) {
            return Err(format!(
                "memory {}B is not a whole number of KiB: argon2 counts memory in KiB",
                memory.0
            ));
        }
        let memory_kib = u32::try_from(memory.0 / 1024)
            .map_err(|_| format!("memory {}KiB is more than argon2 can use", memory.0 / 1024))?;
        if memory_kib < MIN_MEMORY_KIB {
            return Err(format!(
                "memory {memory_kib}KiB is below OWASP's minimum for argon2id, 19MiB"
            ));
        }
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "iterations {iterations} is below OWASP's minimum for argon2id, {MIN_ITERATIONS}"
            ));
        }
        if parallelism < MIN_PARALLELISM {
            return Err(format!(
                "parallelism {parallelism} is below argon2's minimum, {MIN_PARALLELISM}"
            ));
        }
        Params::new(memory_kib, iterations, parallelism, None)
            .map(Self)
            .map_err(|e| {
                format!(
                    "argon2 refuses memory {memory_kib}KiB with parallelism {parallelism}: {e} (memory must be at least 8KiB per unit of parallelism)"
                )
            })
    }

    /// `m`, in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.0.m_cost()
    }

    /// `t`.
    pub fn iterations(&self) -> u32 {
        self.0.t_cost()
    }

    /// `p`.
    pub fn parallelism(&self) -> u32 {
        self.0.p_cost()
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    Invalid,
    Valid,
    /// Valid, but stored with another algorithm or other parameters than configured now: store
    /// a new hash of the password.
    ValidNeedsRehash,
}

/// Hashing failed (the system's random source, in practice).
#[derive(Debug, thiserror::Error)]
#[error("argon2id hashing failed: {0}")]
pub struct HashError(#[from] PhcError);

/// argon2id with the configured parameters, and the stored hash for unknown users.
#[derive(Debug)]
pub struct Hasher {
    argon2: Argon2<'static>,
    params: HashParams,
    dummy: PasswordHash,
}

impl Hasher {
    /// Computes the dummy hash: this costs one hashing.
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.0.clone());
        let dummy = argon2.hash_password(DUMMY_PASSWORD)?;
        Ok(Self {
            argon2,
            params,
            dummy,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a fresh random salt.
    pub fn hash(&self, password: &Secret) -> Result<String, HashError> {
        Ok(self
            .argon2
            .hash_password(password.expose().as_bytes())?
            .to_string())
    }

    /// Checks `password` against `phc`, in constant time. A stored hash that cannot be read
    /// counts as a wrong password, is logged, and costs the same work.
    pub fn verify(&self, password: &Secret, phc: &str) -> Verification {
        let stored = match PasswordHash::new(phc) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "a stored password hash is not a PHC string");
                return self.dummy_verify(password);
            }
        };
        match self
            .argon2
            .verify_password(password.expose().as_bytes(), &stored)
        {
            Ok(()) if self.is_current(&stored) => Verification::Valid,
            Ok(()) => Verification::ValidNeedsRehash,
            Err(PhcError::PasswordInvalid) => Verification::Invalid,
            Err(error) => {
                tracing::warn!(%error, algorithm = %stored.algorithm, "a stored password hash cannot be verified");
                self.dummy_verify(password)
            }
        }
    }

    /// The work of one verification, for a user name that does not exist; always `Invalid`.
    pub fn dummy_verify(&self, password: &Secret) -> Verification {
        let outcome = self
            .argon2
            .verify_password(password.expose().as_bytes(), &self.dummy);
        std::hint::black_box(outcome.is_ok());
        Verification::Invalid
    }

    /// Made with the algorithm, version and parameters configured now.
    fn is_current(&self, stored: &PasswordHash) -> bool {
        let current = &self.params.0;
        stored.algorithm == ARGON2ID_IDENT
            && stored.version == Some(Version::V0x13.into())
            && Params::try_from(stored).is_ok_and(|params| {
                params.m_cost() == current.m_cost()
                    && params.t_cost() == current.t_cost()
                    && params.p_cost() == current.p_cost()
                    && params.output_len() == Some(Params::DEFAULT_OUTPUT_LEN)
                    && params.keyid().is_empty()
                    && params.data().is_empty()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }

    fn params(memory_mib: u64, iterations: u32, parallelism: u32) -> HashParams {
        HashParams::new(ByteSize(memory_mib << 20), iterations, parallelism).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_with_the_configured_parameters() {
        let hasher = Hasher::new(params(20, 3, 2)).unwrap();
        let phc = hasher.hash(&secret("Violet kettle, 9 drums!")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=20480,t=3,p=2$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert_eq!(parsed.salt.unwrap().len(), 16);
        assert_eq!(parsed.hash.unwrap().len(), 32);
        // A fresh salt each time.
        assert_ne!(
            hasher.hash(&secret("Violet kettle, 9 drums!")).unwrap(),
            phc
        );
    }

    #[test]
    fn verify_tells_valid_from_invalid() {
        let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
        let phc = hasher.hash(&secret("Violet kettle, 9 drums!")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            hasher.verify(&secret("Violet kettle, 9 drums!"), &phc),
            Verification::Valid
        );
        assert_eq!(
            hasher.verify(&secret("Violet kettle, 9 drums?"), &phc),
            Verification::Invalid
        );
        // The typed form does not matter, only its NFKC form: full-width `９` is `9`.
        assert_eq!(
            hasher.verify(&secret("Violet kettle, ９ drums!"), &phc),
            Verification::Valid
        );
        for broken in [
            "",
            "not a hash",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert_eq!(
                hasher.verify(&secret("Violet kettle, 9 drums!"), broken),
                Verification::Invalid,
                "{broken}"
            );
        }
    }

    #[test]
    fn other_parameters_or_algorithms_need_a_rehash() {
        let password = secret("Violet kettle, 9 drums!");
        let old = Hasher::new(params(19, 2, 1))
            .unwrap()
            .hash(&password)
            .unwrap();
        for current in [params(19, 3, 1), params(20, 2, 1), params(19, 2, 2)] {
            let hasher = Hasher::new(current).unwrap();
            assert_eq!(
                hasher.verify(&password, &old),
                Verification::ValidNeedsRehash
            );
            let new = hasher.hash(&password).unwrap();
            assert_eq!(hasher.verify(&password, &new), Verification::Valid);
        }

        let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            HashParams::OWASP_MINIMUM.0,
        )
        .hash_password(password.expose().as_bytes())
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$"), "{argon2i}");
        assert_eq!(
            hasher.verify(&password, &argon2i),
            Verification::ValidNeedsRehash
        );
        assert_eq!(
            hasher.verify(&secret("wrong"), &argon2i),
            Verification::Invalid
        );
    }

    #[test]
    fn dummy_verify_is_always_invalid() {
        let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
        let dummy = std::str::from_utf8(DUMMY_PASSWORD).unwrap();
        for password in [dummy, "Violet kettle, 9 drums!", ""] {
            assert_eq!(
                hasher.dummy_verify(&secret(password)),
                Verification::Invalid
            );
        }
        // It spends the work of a real verification: same algorithm and parameters.
        assert!(hasher.is_current(&hasher.dummy));
    }
}
