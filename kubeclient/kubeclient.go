// Package kubeclient builds the Kubernetes client configuration of the agent and the controller
// from kuryr.conf's [kubernetes] section.
package kubeclient

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/config"
)

// Config is, in this order: the kubeconfig file (kubeconfig, else [kubernetes] kubeconfig); else
// api_root with token_file and ssl_ca_crt_file; else the in-cluster configuration. With api_root
// and no CA file the server's certificate is checked against the system's roots, unless
// ssl_verify_server_crt is False (kuryr's default), which turns the check off with a warning: the
// token would go to whoever answers.
func Config(ctx context.Context, k config.KubernetesSection, kubeconfig, userAgent string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = k.Kubeconfig
	}
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case k.APIRoot != "":
		cfg = &rest.Config{Host: k.APIRoot, BearerTokenFile: k.TokenFile}
		cfg.CAFile = k.SSLCACrtFile
		if k.SSLCACrtFile == "" && !k.SSLVerifyServerCrt {
			cfg.Insecure = true
			klog.FromContext(ctx).Info("WARNING: the API server's certificate is not verified: set [kubernetes] ssl_ca_crt_file, or ssl_verify_server_crt = True to use the system's roots", "apiRoot", k.APIRoot)
		}
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = userAgent
	// The API server warns on every create that kuryr's finalizer name has no "/": once is enough.
	cfg.WarningHandler = rest.NewWarningWriter(os.Stderr, rest.WarningWriterOptions{Deduplicate: true})
	cfg.QPS, cfg.Burst = 20, 40
	return cfg, nil
}
