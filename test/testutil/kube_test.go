package testutil

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestKubeconfigFromEnv(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(existing, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, want string
		wantSkip        bool
	}{
		{name: "set and present", env: existing, want: existing},
		{name: "unset", env: "", wantSkip: true},
		{name: "file missing", env: existing + ".gone", wantSkip: true},
	} {
		var got string
		var skipped bool
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(KubeconfigEnv, tc.env)
			t.Setenv(RequireAllEnv, "") // a skip here, even under make test: the failing mode is TestRequireFailsWhenRequired's
			defer func() { skipped = t.Skipped() }()
			got = Kubeconfig(t)
		})
		if skipped != tc.wantSkip || (!tc.wantSkip && got != tc.want) {
			t.Errorf("%s: Kubeconfig() = %q, skipped=%v; want %q, skipped=%v", tc.name, got, skipped, tc.want, tc.wantSkip)
		}
	}
}

// TestKubeServerNamespaceRoundTrip proves the server behind KURYR_TEST_KUBECONFIG serves the core API
// to client-go: it creates a namespace and deletes it again.
func TestKubeServerNamespaceRoundTrip(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(t))
	if err != nil {
		t.Fatalf("loading %s: %v", os.Getenv(KubeconfigEnv), err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset for %s: %v", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// An unstamped build reports v0.0.0-master+$Format:%H$, which kubectl cannot parse.
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version from %s: %v", cfg.Host, err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.") {
		t.Errorf("server gitVersion = %q, want a stamped v1.x", v.GitVersion)
	}

	nss := cs.CoreV1().Namespaces()
	ns, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "kuryr-testutil-",
		Labels:       map[string]string{"app.kubernetes.io/created-by": "kuryr-testutil"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	got, err := nss.Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting namespace %s: %v", ns.Name, err)
	}
	if got.UID != ns.UID || got.Labels["app.kubernetes.io/created-by"] != "kuryr-testutil" {
		t.Errorf("namespace %s read back as uid %s labels %v, want uid %s and our label", ns.Name, got.UID, got.Labels, ns.UID)
	}

	if err := nss.Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting namespace %s: %v", ns.Name, err)
	}
	// No kube-controller-manager runs, so nothing empties the namespace and drops its "kubernetes"
	// finalizer: it stays Terminating until the finalizer is removed through the finalize subresource.
	got, err = nss.Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting deleted namespace %s: %v", ns.Name, err)
	}
	if got.DeletionTimestamp == nil || got.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace %s after delete: deletionTimestamp=%v phase=%s, want set and Terminating",
			ns.Name, got.DeletionTimestamp, got.Status.Phase)
	}
	got.Spec.Finalizers = nil
	if _, err := nss.Finalize(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("finalizing namespace %s: %v", ns.Name, err)
	}
	for {
		_, err := nss.Get(ctx, ns.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("namespace %s still there after delete and finalize (last error: %v)", ns.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
