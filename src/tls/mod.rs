//! TLS for both sides of the proxy, in three parts so that no import runs
//! in a circle: [`material`] (a leaf: reading and checking PEM files, used
//! by the config check), [`listeners`] (downstream certificates by SNI and
//! their hot reload) and [`upstream`] (CA bundles and probe settings of TLS
//! pools).

pub mod listeners;
pub mod material;
pub mod upstream;
