package fetch

import (
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

// A denied read of a secret named by ARN says which of the two things
// another account's secret needs is missing: its resource policy (the
// action denied) or a customer managed key (KMS denied). A secret named by
// name is the caller's own, and gets neither hint.
func TestSecretAcrossAccountsNamesWhatIsMissing(t *testing.T) {
	u := uniq(t)
	arn, _ := createSecret(t, u+"/x", "xacct-value", nil)
	for _, tc := range []struct {
		name   string
		id     string
		rule   faultproxy.Rule
		want   []string
		unwant string
	}{
		{"policy", arn, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.AccessDenied},
			[]string{"allow secretsmanager:GetSecretValue", "resource policy"}, "KMS key"},
		{"KMS", arn, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.KMSAccessDenied},
			[]string{"kms:Decrypt", "customer managed KMS key"}, "resource policy"},
		{"DecryptionFailure", arn, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.CustomError, Code: "DecryptionFailure"},
			[]string{"kms:Decrypt", "customer managed KMS key"}, "resource policy"},
		{"by name", u + "/x", faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.AccessDenied},
			[]string{"allow secretsmanager:GetSecretValue"}, "resource policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, cfg := proxied(t)
			proxy.Inject(tc.rule)
			_, err := (&secretSource{Secrets: []Secret{{ID: tc.id}}, Clients: clientsFor(cfg)}).Load(t.Context())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tc.unwant) {
				t.Errorf("%q says %q: the wrong thing is missing", err, tc.unwant)
			}
			noValues(t, err, "xacct-value")
		})
	}
}
