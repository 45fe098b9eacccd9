//! TLS: certificates, the ClientHello reader of the :443 front door, the server config that
//! picks a certificate by SNI, and the client side used to re-encrypt to pods.

pub(crate) mod client_auth;
pub mod self_signed;
pub mod server_config;
pub(crate) mod upstream;
