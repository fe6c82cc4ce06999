package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeconfigEnv names the kubeconfig of the test kube-apiserver; hack/kube-up.sh prints its path.
const KubeconfigEnv = "KURYR_TEST_KUBECONFIG"

// Kubeconfig returns the path in KURYR_TEST_KUBECONFIG. When it is unset or the file does not exist
// the test goes through Require: skipped in a plain `go test`, failed under KURYR_REQUIRE_ALL=1.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	path := os.Getenv(KubeconfigEnv)
	if path == "" {
		Require(t, false, fmt.Sprintf("test needs a kube-apiserver: %s is not set (export %s=$(hack/kube-up.sh | tail -n1))",
			KubeconfigEnv, KubeconfigEnv))
		return ""
	}
	if _, err := os.Stat(path); err != nil {
		Require(t, false, fmt.Sprintf("test needs a kube-apiserver: %s=%s: %v (rerun hack/kube-up.sh)", KubeconfigEnv, path, err))
		return ""
	}
	return path
}

// Kubectl returns the kubectl that hack/kube-up.sh links next to the kubeconfig, going through
// Require when there is none.
func Kubectl(t testing.TB) string {
	t.Helper()
	path := filepath.Join(filepath.Dir(Kubeconfig(t)), "kubectl")
	if _, err := os.Stat(path); err != nil {
		Require(t, false, fmt.Sprintf("test needs kubectl: %v (rerun hack/kube-up.sh)", err))
		return ""
	}
	return path
}

// KubeClient returns a client of the test kube-apiserver and its kubeconfig's path (through
// Kubeconfig: skipped or failed when there is none).
func KubeClient(t testing.TB) (kubernetes.Interface, *rest.Config, string) {
	t.Helper()
	path := Kubeconfig(t)
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatalf("kubernetes client for %s: %v", rc.Host, err)
	}
	return kc, rc, path
}
