//! The authenticated identity shared by every authenticator in this crate (client
//! certificates, static tokens), mirroring upstream's `user.Info`.

/// Who a request comes from, as an authenticator established it.
///
/// Mirrors upstream's `k8s.io/apiserver/pkg/authentication/user.Info` minus `extra`. An
/// authenticator fills in only what its credential carries: the union layer above it is where
/// `system:authenticated` gets added, not here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name (`system:node:n1`, `kubernetes-admin`, ...).
    pub name: String,
    /// A unique id for the user; empty when the credential carries none (client certificates).
    pub uid: String,
    /// Group memberships, in the order the credential listed them.
    pub groups: Vec<String>,
}
