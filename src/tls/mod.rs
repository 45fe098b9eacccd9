//! TLS: certificates, the ClientHello reader of the :443 front door, the server config that
//! picks a certificate by SNI, and the client side used to re-encrypt to pods.

pub mod certificates;
pub mod client_hello;
pub mod server_config;
pub mod upstream;
