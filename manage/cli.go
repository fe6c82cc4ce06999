package manage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultTimeout is subports.py's default for every command.
const DefaultTimeout = 180 * time.Second

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// expandMulti turns argparse-style "--trunks a b c" into "--trunks a --trunks b --trunks c" so the
// standard flag package can read the subports.py command lines operators already use.
func expandMulti(args []string, multi ...string) []string {
	isMulti := map[string]bool{}
	for _, m := range multi {
		isMulti["-"+m], isMulti["--"+m] = true, true
	}
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !isMulti[a] {
			out = append(out, a)
			continue
		}
		n := 0
		for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			out = append(out, a, args[i+1])
			i++
			n++
		}
		if n == 0 {
			out = append(out, a) // let flag report the missing value
		}
	}
	return out
}

type common struct {
	socket  string
	timeout int
	output  string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "socket", DefaultSocketPath, "management socket of the agent ([pool_manager] sock_file)")
	fs.IntVar(&c.timeout, "t", int(DefaultTimeout.Seconds()), "set timeout for operation in seconds")
	fs.IntVar(&c.timeout, "timeout", int(DefaultTimeout.Seconds()), "set timeout for operation in seconds (same as -t)")
	fs.StringVar(&c.output, "o", "text", "output format: text or json")
}

const usage = `usage: kuryr-pools [-h] {create,free,list,show} ...

Manage the ports pools of this node's kuryr-agent (the successor of kuryr's subports.py).

commands:
  create   create ports in the pools of the given trunks (bulk requests; attached when it answers)
  free     delete the unused ports of the given trunks' pools, or of every pool
  list     list the pools and how many free ports each has
  show     print the IDs of the free ports of one pool

Run 'kuryr-pools COMMAND -h' for a command's options.
`

// RunCLI runs kuryr-pools with args (without the program name) and returns the exit status.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// --socket may also come before the command, as a global option.
	var global []string
	for len(args) > 0 {
		if a := args[0]; a == "--socket" || a == "-socket" {
			if len(args) < 2 {
				fmt.Fprintf(stderr, "kuryr-pools: %s needs a path\n", a)
				return 2
			}
			global, args = append(global, a, args[1]), args[2:]
		} else if strings.HasPrefix(a, "--socket=") || strings.HasPrefix(a, "-socket=") {
			global, args = append(global, a), args[1:]
		} else {
			break
		}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest := args[0], append(global, args[1:]...)
	fs := flag.NewFlagSet("kuryr-pools "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	var (
		method, path string
		body         any
		prepare      func() error
	)
	switch cmd {
	case "create":
		var trunks stringList
		var num int
		var force bool
		fs.Var(&trunks, "trunks", "list of trunk IPs where subports will be added (required)")
		fs.IntVar(&num, "n", 1, "number of subports to be created per pool")
		fs.IntVar(&num, "num-ports", 1, "number of subports to be created per pool (same as -n)")
		fs.BoolVar(&force, "force", false, "populate past ports_pool_max")
		rest = expandMulti(rest, "trunks")
		method, path = http.MethodPost, PathPopulate
		prepare = func() error {
			if len(trunks) == 0 {
				return errors.New("the following arguments are required: --trunks")
			}
			n := num
			body = PopulateRequest{Trunks: trunks, NumPorts: &n, Force: force}
			return nil
		}
	case "free":
		var trunks stringList
		fs.Var(&trunks, "trunks", "list of trunk IPs where subports will be freed (default: all pools)")
		rest = expandMulti(rest, "trunks")
		method, path = http.MethodPost, PathFree
		prepare = func() error {
			body = FreeRequest{Trunks: trunks}
			return nil
		}
	case "list":
		method, path = http.MethodGet, PathList
		prepare = func() error { body = struct{}{}; return nil }
	case "show":
		var trunk, project, network string
		var sgs stringList
		fs.StringVar(&trunk, "trunk", "", "trunk IP (or bare-metal node name) of the desired pool (required)")
		fs.StringVar(&project, "p", "", "project id of the pool (required)")
		fs.StringVar(&project, "project-id", "", "project id of the pool (same as -p)")
		fs.Var(&sgs, "sg", "security group ids of the pool")
		fs.StringVar(&network, "network", "", "network id of the pool (kuryr's newer key), instead of --sg")
		rest = expandMulti(rest, "sg")
		method, path = http.MethodGet, PathShow
		prepare = func() error {
			if trunk == "" || project == "" {
				return errors.New("the following arguments are required: --trunk, -p/--project-id")
			}
			if (len(sgs) == 0) == (network == "") {
				return errors.New("give either --sg SG [SG ...] or --network NET")
			}
			third := any([]string(sgs))
			if network != "" {
				third = network
			}
			body = map[string]any{"pool_key": []any{trunk, project, third}}
			return nil
		}
	default:
		fmt.Fprintf(stderr, "kuryr-pools: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kuryr-pools %s: unexpected arguments: %s\n", cmd, strings.Join(fs.Args(), " "))
		return 2
	}
	if c.output != "text" && c.output != "json" {
		fmt.Fprintf(stderr, "kuryr-pools %s: -o %q: want text or json\n", cmd, c.output)
		return 2
	}
	if c.timeout <= 0 {
		fmt.Fprintf(stderr, "kuryr-pools %s: timeout %d: must be positive\n", cmd, c.timeout)
		return 2
	}
	if err := prepare(); err != nil {
		fmt.Fprintf(stderr, "kuryr-pools %s: %v\n", cmd, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.timeout)*time.Second)
	defer cancel()
	resp, err := NewClient(c.socket).Do(ctx, method, path, body, c.output == "json")
	if err != nil {
		fmt.Fprintf(stderr, "kuryr-pools %s: %v\n", cmd, err)
		return 1
	}
	out := string(resp.Body)
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	if !resp.OK() {
		fmt.Fprintf(stderr, "kuryr-pools %s: the agent answered %d %s:\n%s", cmd, resp.StatusCode, http.StatusText(resp.StatusCode), out)
		return 1
	}
	fmt.Fprint(stdout, out)
	return 0
}
