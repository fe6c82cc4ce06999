// Package cnirun drives real CNI plugin binaries through libcni into real network namespaces, as
// a container runtime does: the demo, the end-to-end tests and the benchmarks use it.
package cnirun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// Runner runs one network configuration list.
type Runner struct {
	List *libcni.NetworkConfigList
	CNI  *libcni.CNIConfig
}

// NewRunner loads a conflist and looks plugins up in binDirs. The libcni cache goes to cacheDir.
func NewRunner(conflist []byte, cacheDir string, binDirs ...string) (*Runner, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	// An explicit exec: libcni sets its default lazily on first use, a data race when pods are
	// added from several goroutines.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Runner{List: list, CNI: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, exec)}, nil
}

// Pod is a sandbox: a container ID, a netns and the pod it stands for.
type Pod struct {
	ContainerID string
	Namespace   string
	Name        string
	UID         string
	NS          ns.NetNS
	Result      *current.Result
}

// NewPod creates a fresh netns for a pod.
func NewPod(namespace, name string) (*Pod, error) {
	netns, err := testutils.NewNS()
	if err != nil {
		return nil, fmt.Errorf("create netns: %w", err)
	}
	id := filepath.Base(netns.Path())
	return &Pod{ContainerID: "ctr-" + id, Namespace: namespace, Name: name, UID: "uid-" + id, NS: netns}, nil
}

// Close removes the pod's netns.
func (p *Pod) Close() error {
	p.NS.Close()
	return testutils.UnmountNS(p.NS)
}

func (r *Runner) runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NS.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}, {"K8S_POD_UID", p.UID}}}
}

// Add runs ADD and returns how long it took.
func (r *Runner) Add(ctx context.Context, p *Pod) (time.Duration, error) {
	start := time.Now()
	res, err := r.CNI.AddNetworkList(ctx, r.List, r.runtimeConf(p))
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("ADD %s/%s: %w", p.Namespace, p.Name, err)
	}
	if p.Result, err = current.NewResultFromResult(res); err != nil {
		return d, fmt.Errorf("ADD %s/%s: result: %w", p.Namespace, p.Name, err)
	}
	return d, nil
}

// Check runs CHECK.
func (r *Runner) Check(ctx context.Context, p *Pod) error {
	return r.CNI.CheckNetworkList(ctx, r.List, r.runtimeConf(p))
}

// Del runs DEL and returns how long it took.
func (r *Runner) Del(ctx context.Context, p *Pod) (time.Duration, error) {
	start := time.Now()
	err := r.CNI.DelNetworkList(ctx, r.List, r.runtimeConf(p))
	return time.Since(start), err
}

// GC runs GC with the given valid attachments.
func (r *Runner) GC(ctx context.Context, valid []*Pod) error {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ContainerID, IfName: "eth0"})
	}
	return r.CNI.GCNetworkList(ctx, r.List, args)
}

// Status runs STATUS.
func (r *Runner) Status(ctx context.Context) error {
	return r.CNI.GetStatusNetworkList(ctx, r.List)
}

// Summary is a latency distribution.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarize computes p50, p99 and max of ds.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return Summary{N: len(s), P50: q(0.50), P99: q(0.99), Max: s[len(s)-1]}
}

func (s Summary) String() string {
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", s.N, round(s.P50), round(s.P99), round(s.Max))
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// EnsureDir creates dir.
func EnsureDir(dir string) error { return os.MkdirAll(dir, 0o755) }
