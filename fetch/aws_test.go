package fetch

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// The clients paramexec makes try each call once: a throttled call fails
// at once, to be retried on paramexec's own schedule (the SDK's default
// would send it three times). The batch read of secrets relies on it.
func TestNewClientsMakeOneAttemptPerCall(t *testing.T) {
	proxy, err := faultproxy.Start(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	for _, kv := range motoserver.Env(proxy.URL()) {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	// Nothing of the developer's own configuration.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	clients, err := newClients(t.Context(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	proxy.Inject(faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.Throttle})
	proxy.Inject(faultproxy.Rule{Op: "secretsmanager:BatchGetSecretValue", Fault: faultproxy.Throttle})
	if _, err := clients.SSM(clients.Region).GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{"/x"}}); err == nil {
		t.Error("GetParameters succeeded through a throttling proxy")
	}
	if _, err := clients.SecretsManager(clients.Region).BatchGetSecretValue(t.Context(), &secretsmanager.BatchGetSecretValueInput{SecretIdList: []string{"x"}}); err == nil {
		t.Error("BatchGetSecretValue succeeded through a throttling proxy")
	}
	c := proxy.Counts()
	if c.ByOp["ssm:GetParameters"] != 1 || c.ByOp["secretsmanager:BatchGetSecretValue"] != 1 {
		t.Errorf("calls %v; want one attempt of each", c.ByOp)
	}
}
