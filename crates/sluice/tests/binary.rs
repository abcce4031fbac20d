//! Black-box tests of the real `sluice` binary: generated credentials, `sluice credentials`,
//! SIGTERM shutdown, restart, `sluice audit`, and no secret in the logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    endpoint: String,
}

fn spawn(dir: &Path, port: u16, log: &Path) -> Proc {
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("SLUICE_LOG", "debug")
        .env_remove("SLUICE_ROOT_ACCESS_KEY_ID")
        .env_remove("SLUICE_ROOT_SECRET_ACCESS_KEY")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_serving(port);
    Proc { child, endpoint }
}

fn sigterm_and_wait(p: &mut Proc) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn credentials(dir: &Path) -> (String, String, String) {
    let out = Command::new(BIN)
        .arg("credentials")
        .arg("--data-dir")
        .arg(dir)
        .env_remove("SLUICE_ROOT_ACCESS_KEY_ID")
        .env_remove("SLUICE_ROOT_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
            .to_string()
    };
    (
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        get("AWS_ENDPOINT_URL"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("sluice.log");
    let port = free_port();
    let mut p = spawn(&dir, port, &log);

    // Generated credentials: sealed file with 0600 permissions, printed by `sluice credentials`.
    let (akid, secret, endpoint) = credentials(&dir);
    assert!(akid.starts_with("AKIA") && akid.len() == 20);
    assert_eq!(secret.len(), 40);
    assert_eq!(endpoint, "http://127.0.0.1:4566");
    for f in ["root.key", "credentials.sealed"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    let cfg = sdk_config_with(&p.endpoint, &akid, &secret).await;
    let kms = aws_sdk_kms::Client::new(&cfg);
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_string();
    kms.create_alias()
        .alias_name("alias/bin")
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let marker = b"LOG-MARKER-plaintext-5b2e".to_vec();
    let ct = kms
        .encrypt()
        .key_id("alias/bin")
        .plaintext(Blob::new(marker.clone()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let dk = kms
        .generate_data_key()
        .key_id(&key_id)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let data_key = dk.plaintext().unwrap().as_ref().to_vec();

    // SIGTERM: clean exit.
    let st = sigterm_and_wait(&mut p);
    assert!(st.success(), "exit status {st:?}");

    // Restart: the same credentials work, keys and aliases are there, ciphertexts open.
    let mut p = spawn(&dir, port, &tmp.path().join("sluice2.log"));
    let kms = aws_sdk_kms::Client::new(&sdk_config_with(&p.endpoint, &akid, &secret).await);
    let pt = kms.decrypt().ciphertext_blob(ct).send().await.unwrap();
    assert_eq!(pt.plaintext().unwrap().as_ref(), marker.as_slice());
    let d = kms.describe_key().key_id("alias/bin").send().await.unwrap();
    assert_eq!(d.key_metadata().unwrap().key_id(), key_id);

    // `sluice audit` reads the trail while the server runs.
    let out = Command::new(BIN)
        .args(["audit", "--event-name", "Encrypt", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["eventName"], "Encrypt");
    assert!(
        lines[0]["resources"][0]["ARN"]
            .as_str()
            .unwrap()
            .ends_with(&key_id)
    );

    let st = sigterm_and_wait(&mut p);
    assert!(st.success());

    // Neither the logs nor the data directory hold a plaintext or the secret access key.
    let b64 = base64::engine::general_purpose::STANDARD;
    let needles = [
        marker.clone(),
        b64.encode(&marker).into_bytes(),
        data_key.clone(),
        b64.encode(&data_key).into_bytes(),
        secret.as_bytes().to_vec(),
    ];
    let mut files = files_under(&dir);
    files.push((log.clone(), std::fs::read(&log).unwrap()));
    let log_text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).to_string();
    assert!(
        log_text.contains("sluice is serving"),
        "logs are written: {log_text}"
    );
    for (path, bytes) in files {
        for n in &needles {
            assert!(!contains(&bytes, n), "{} leaks a secret", path.display());
        }
    }
}

#[test]
fn two_servers_cannot_share_a_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut p = spawn(&dir, free_port(), &tmp.path().join("a.log"));
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    sigterm_and_wait(&mut p);
}
