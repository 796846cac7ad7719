//! `hodei certs init` and `hodei certs agent`: a private CA and the
//! certificates signed by it, for operators without a PKI (rcgen, ECDSA
//! P-256).
//!
//! `init` writes into `DIR` (default `DATA_DIR/tls`): `ca.pem` / `ca.key`
//! (the CA; keep `ca.key` private), `server.pem` / `server.key` (the host,
//! valid for `localhost`, `127.0.0.1`, `::1` and every `--name` given).
//! `agent --name N` writes `agent-N.pem` / `agent-N.key`, a client
//! certificate for mutual TLS (`--client-ca DIR/ca.pem` on the host).
//! Keys are written 0600; nothing is overwritten.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Subcommands of `hodei certs`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// A new CA and a server certificate signed by it.
    Init {
        /// Where to write them [default: DATA_DIR/tls].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The data dir whose `tls/` is the default.
        #[arg(long, env = "HODEI_DATA_DIR", default_value = "hodei-data")]
        data_dir: PathBuf,
        /// Extra DNS names or IP addresses the server certificate is valid
        /// for (repeat), beside localhost and loopback.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// A client certificate for an agent, signed by the CA in `--dir`.
    Agent {
        /// The agent's name (its certificate's common name).
        #[arg(long)]
        name: String,
        /// Where the CA is and the certificate goes [default: DATA_DIR/tls].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The data dir whose `tls/` is the default.
        #[arg(long, env = "HODEI_DATA_DIR", default_value = "hodei-data")]
        data_dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

fn write_new(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days.max(1));
}

/// Writes a new CA (`ca.pem`, `ca.key`) and a server certificate signed by
/// it (`server.pem`, `server.key`) into `dir`, valid for loopback and
/// `names`; nothing is overwritten.
pub fn init(dir: &Path, names: Vec<String>, days: i64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Hodei Jobs private CA");
    ca.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut ca, days.saturating_mul(5));
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    sans.extend(names);
    let mut server = CertificateParams::new(sans)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "hodei host");
    server.use_authority_key_identifier_extension = true;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server, days);
    let server_key = KeyPair::generate()?;
    let issuer = Issuer::new(ca, ca_key);
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write_new(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write_new(&dir.join("ca.key"), &ca_key_pem, true)?;
    write_new(&dir.join("server.pem"), &server_cert.pem(), false)?;
    write_new(&dir.join("server.key"), &server_key.serialize_pem(), true)?;
    Ok(())
}

/// Runs a `hodei certs` subcommand.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init {
            dir,
            data_dir,
            names,
            days,
        } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("tls"));
            init(&dir, names, days)?;
            println!(
                "wrote {0}/ca.pem, ca.key, server.pem, server.key\n\
                 serve:  hodei serve --tls-cert {0}/server.pem --tls-key {0}/server.key\n\
                 agents: hodei-agent --server-url https://HOST:50051 --ca-cert {0}/ca.pem\n\
                 CLI:    hodei --server https://HOST:8080 --ca-cert {0}/ca.pem ...",
                dir.display()
            );
        }
        CertsCommand::Agent {
            name,
            dir,
            data_dir,
            days,
        } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("tls"));
            let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))
                .with_context(|| format!("no CA in {} (run `hodei certs init`)", dir.display()))?;
            let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key"))?)?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, name.as_str());
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            validity(&mut params, days);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            let (cert_path, key_path) = (
                dir.join(format!("agent-{name}.pem")),
                dir.join(format!("agent-{name}.key")),
            );
            write_new(&cert_path, &cert.pem(), false)?;
            write_new(&key_path, &key.serialize_pem(), true)?;
            println!(
                "wrote {} and {}\nagent: hodei-agent --client-cert {} --client-key {} ...",
                cert_path.display(),
                key_path.display(),
                cert_path.display(),
                key_path.display()
            );
        }
    }
    Ok(())
}
