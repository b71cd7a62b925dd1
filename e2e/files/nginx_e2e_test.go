package files

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
	"github.com/paramexec/paramexec/internal/testenv"
)

// tlsSecret is a Secrets Manager secret holding a self-signed certificate
// for 127.0.0.1 with serial, and its key, as {"cert": PEM, "key": PEM}.
func tlsSecret(t *testing.T, serial int64) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "paramexec test " + strconv.FormatInt(serial, 10)},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(map[string]string{
		"cert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"key":  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
		// A seeded value: the log scan fails the suite if any log holds it.
		"note": harness.Val("tls-" + strconv.FormatInt(serial, 10)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(doc)
}

// nginxBinary is Debian's nginx (nginx-light or nginx), or a skip; on CI,
// where .ci/run installs it, a failure.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := osexec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	testenv.SkipOrFailOnCI(t, "nginx is not installed (apt-get install nginx-light)")
	return ""
}

// nginxConf writes an nginx configuration that serves TLS on port with
// the certificate and key files in filesDir, everything else under tmp.
func nginxConf(t *testing.T, tmp, filesDir string, port int) string {
	t.Helper()
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
worker_processes 1;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[2]d ssl;
        ssl_certificate %[3]s/TLS_CERT;
        ssl_certificate_key %[3]s/TLS_KEY;
        location / { return 200 "ok\n"; }
    }
}
`, tmp, port, filesDir)
	path := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// servedSerial is the serial of the certificate served on addr now.
func servedSerial(addr string) (int64, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// tlsLoad sends HTTPS GETs to url from two workers, each on a new
// connection (so each sees the certificate served at that moment), until
// stopped, at most maxLoad long. It counts answers by certificate serial,
// and failures.
type tlsLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	bySerial map[int64]int
	failed   []error
}

func startTLSLoad(url string) *tlsLoad {
	const maxLoad = 2 * time.Minute
	l := &tlsLoad{stop: make(chan struct{}), bySerial: map[int64]int{}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, Proxy: nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	deadline := time.Now().Add(maxLoad)
	for range 2 {
		l.wg.Go(func() {
			for time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				l.one(client, url)
			}
		})
	}
	return l
}

func (l *tlsLoad) one(client *http.Client, url string) {
	resp, err := client.Get(url)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed = append(l.failed, err)
		return
	}
	l.bySerial[resp.TLS.PeerCertificates[0].SerialNumber.Int64()]++
}

func (l *tlsLoad) end() (map[int64]int, []error) {
	close(l.stop)
	l.wg.Wait()
	return l.bySerial, l.failed
}

// Debian's nginx terminates TLS with a certificate and key kept in one
// Secrets Manager secret and delivered as files. Rotating the secret under
// load sends nginx SIGHUP: it serves the new certificate, its master
// process is the same, and no request fails.
func TestNginxReloadsARotatedCertificate(t *testing.T) {
	harness.E2E(t)
	nginx := nginxBinary(t)
	secret := uniqueName(t, "tls")
	harness.Moto.CreateSecret(t, secret, tlsSecret(t, 1001))
	tmp := t.TempDir()
	filesDir := filepath.Join(tmp, "secrets")
	port := harness.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := nginxConf(t, tmp, filesDir, port)

	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--secret", secret+"=TLS_", "--interval", "1s", "--files-dir", filesDir,
		"--deliver", "files:secret:"+secret+"=TLS_",
		"--on-change-of", "reload:secret:"+secret+"=TLS_",
		"--ready", "tcp:"+addr, "--stop-signal", "QUIT",
		"--", nginx, "-p", tmp, "-c", conf, "-e", filepath.Join(tmp, "error.log"), "-g", "daemon off;")
	t.Cleanup(func() {
		if t.Failed() {
			elog, _ := os.ReadFile(filepath.Join(tmp, "error.log"))
			t.Logf("paramexec's log:\n%s\nnginx's error log:\n%s", pe.Stderr.String(), elog)
		}
	})
	harness.WaitFor(t, "nginx serving certificate 1001", func() bool { s, err := servedSerial(addr); return err == nil && s == 1001 })
	master := nginxMaster(t, tmp, pe)

	load := startTLSLoad("https://" + addr + "/")
	time.Sleep(time.Second) // some answers with the old certificate first
	harness.Moto.PutSecretValue(t, secret, tlsSecret(t, 2002))
	harness.WaitFor(t, "nginx serving certificate 2002", func() bool { s, err := servedSerial(addr); return err == nil && s == 2002 })
	time.Sleep(time.Second) // and some with the new one
	bySerial, failed := load.end()

	if len(failed) > 0 {
		t.Errorf("%d requests failed during the rotation, the first: %v", len(failed), failed[0])
	}
	if bySerial[1001] == 0 || bySerial[2002] == 0 {
		t.Errorf("answers by certificate serial %v; want some with each", bySerial)
	}
	// The master pid is read a second after nginx served the new
	// certificate: a restart is what would have served it, so it would
	// show by then.
	if now := nginxMaster(t, tmp, pe); now != master {
		t.Errorf("nginx's master pid went from %d to %d: restarted, not reloaded", master, now)
	}
	if serial := opensslSerial(t, addr); serial != "" && !strings.EqualFold(serial, fmt.Sprintf("%X", 2002)) {
		t.Errorf("openssl s_client reads serial %s, want %X", serial, 2002)
	}
	log := pe.Stderr.String()
	if !regexp.MustCompile(`signalling child to reload.*pid=` + strconv.Itoa(master) + `.*signal=SIGHUP.*TLS_CERT, TLS_KEY.*changed`).MatchString(log) {
		t.Errorf("the log does not say nginx (pid %d) got SIGHUP for TLS_CERT and TLS_KEY:\n%s", master, log)
	}
	if elog, _ := os.ReadFile(filepath.Join(tmp, "error.log")); !strings.Contains(string(elog), "signal 1 (SIGHUP) received") {
		t.Errorf("nginx's error log does not show the SIGHUP:\n%s", elog)
	}
	t.Logf("answers by serial during the rotation: %v", bySerial)

	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("paramexec exited %d; stderr:\n%s", code, pe.Stderr.String())
	}
	if _, err := os.Lstat(filesDir); !os.IsNotExist(err) {
		t.Errorf("the certificate's files are still there after paramexec exited (%v)", err)
	}
}

// nginxMaster is nginx's master pid from its pid file, checked to be
// paramexec's child.
func nginxMaster(t *testing.T, tmp string, pe *harness.Running) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tmp, "nginx.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if ppid, _ := strconv.Atoi(fields[1]); ppid != pe.Cmd.Process.Pid {
		t.Fatalf("nginx's master %d has parent %d, not paramexec %d", pid, ppid, pe.Cmd.Process.Pid)
	}
	return pid
}

// opensslSerial reads the served certificate's serial with openssl
// s_client, as an operator would; "" when openssl is not installed.
func opensslSerial(t *testing.T, addr string) string {
	t.Helper()
	if _, err := osexec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: the serial was read with Go's tls.Dial only")
		return ""
	}
	cmd := osexec.Command("sh", "-c", "openssl s_client -connect "+addr+" </dev/null 2>/dev/null | openssl x509 -noout -serial")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	serial, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "serial=")
	if !ok {
		t.Fatalf("openssl printed %q", out)
	}
	return strings.TrimLeft(serial, "0")
}
