// Porcupine's side of bench/peers/porcupine.ts: checks Jepsen etcd
// histories (Porcupine's bundled test data) with Porcupine's checker and
// prints one JSON line per history: its file, the verdict and the time
// the check took (parsing excluded). Unknown outcomes (:info, a timed-out
// read, an invoke never answered) return at the end of the history with an
// unknown output, as Porcupine's own test harness closes them.
//
//	porcupine-bench FILE...
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"
)

type input struct {
	op      uint8 // 0 read, 1 write, 2 cas
	arg, to int
}

type output struct {
	ok, exists, unknown bool
	value               int
}

const absent = -1000000

var model = porcupine.Model{
	Init: func() interface{} { return absent },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		st, i, o := state.(int), in.(input), out.(output)
		switch i.op {
		case 0:
			return o.unknown || (!o.exists && st == absent) || (o.exists && st == o.value), st
		case 1:
			return true, i.arg
		default:
			next := st
			if i.arg == st {
				next = i.to
			}
			return o.unknown || (i.arg == st) == o.ok, next
		}
	},
}

var line = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*)$`)
var cas = regexp.MustCompile(`^\[(\d+)\s+(\d+)\]$`)

func parse(path string) ([]porcupine.Operation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []porcupine.Operation
	open := map[int]int{}
	var unknown []int
	t := int64(0)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		t++
		proc, _ := strconv.Atoi(m[1])
		kind, fn, arg := m[2], m[3], m[4]
		if kind == "invoke" {
			in := input{}
			switch fn {
			case "write":
				in.op = 1
				in.arg, _ = strconv.Atoi(arg)
			case "cas":
				c := cas.FindStringSubmatch(arg)
				if c == nil {
					return nil, fmt.Errorf("%s: bad cas %q", path, arg)
				}
				in.op = 2
				in.arg, _ = strconv.Atoi(c[1])
				in.to, _ = strconv.Atoi(c[2])
			}
			open[proc] = len(ops)
			ops = append(ops, porcupine.Operation{ClientId: proc, Input: in, Call: t})
			continue
		}
		k, found := open[proc]
		if !found {
			return nil, fmt.Errorf("%s: line %d: process %d completes nothing", path, t, proc)
		}
		delete(open, proc)
		switch {
		case kind == "ok" && fn == "read":
			o := output{}
			if arg != "nil" {
				o.exists = true
				o.value, _ = strconv.Atoi(arg)
			}
			ops[k].Output, ops[k].Return = o, t
		case kind == "ok":
			ops[k].Output, ops[k].Return = output{ok: true}, t
		case kind == "fail" && fn == "cas":
			ops[k].Output, ops[k].Return = output{ok: false}, t
		default:
			unknown = append(unknown, k)
		}
	}
	for _, k := range open {
		unknown = append(unknown, k)
	}
	for _, k := range unknown {
		ops[k].Output, ops[k].Return = output{unknown: true}, t+1
	}
	return ops, sc.Err()
}

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		ops, err := parse(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		start := time.Now()
		ok := porcupine.CheckOperations(model, ops)
		ms := float64(time.Since(start).Nanoseconds()) / 1e6
		enc.Encode(map[string]interface{}{"file": path, "ok": ok, "ms": ms})
	}
}
