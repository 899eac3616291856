package netcmd

import (
	"fmt"
	"strconv"
	"strings"
)

// flagSpec describes one flag of a command. Flags are written as Docker's
// CLI writes them (POSIX style with GNU long options): "--subnet=X",
// "--subnet X", "-o X", "-oX"; a boolean is "--ipv6" or "--ipv6=false".
// Flags and arguments may come in any order; "--" ends the flags.
type flagSpec struct {
	names  []string // "subnet", "o"; the first is the key in parsedArgs
	isBool bool
	repeat bool // may be given more than once; otherwise the last one wins
}

// parsedArgs is a command line split into flag values and arguments.
type parsedArgs struct {
	vals map[string][]string
	args []string
}

func (p parsedArgs) str(name string) string {
	v := p.vals[name]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func (p parsedArgs) list(name string) []string { return p.vals[name] }

func (p parsedArgs) has(name string) bool { return len(p.vals[name]) > 0 }

// bool reads a boolean flag; parseArgs has checked its value.
func (p parsedArgs) bool(name string) bool {
	b, _ := strconv.ParseBool(p.str(name)) // checked by parseArgs
	return b
}

// usageError is a mistake on the command line: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

func usagef(format string, args ...any) error { return usageError(fmt.Sprintf(format, args...)) }

// parseArgs splits args by specs.
func parseArgs(args []string, specs []flagSpec) (parsedArgs, error) {
	byName := map[string]*flagSpec{}
	for i := range specs {
		for _, n := range specs[i].names {
			byName[n] = &specs[i]
		}
	}
	p := parsedArgs{vals: map[string][]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.args = append(p.args, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			p.args = append(p.args, a)
			continue
		}
		name, val, hasVal, shown := splitFlag(a)
		spec := byName[name]
		if spec == nil {
			return p, usagef("unknown flag: %s", shown)
		}
		if spec.isBool {
			if !hasVal {
				val = "true"
			}
			if _, err := strconv.ParseBool(val); err != nil {
				return p, usagef("invalid argument %q for %s: want true or false", val, shown)
			}
		} else if !hasVal {
			if i+1 >= len(args) {
				return p, usagef("flag needs an argument: %s", shown)
			}
			i++
			val = args[i]
		}
		key := spec.names[0]
		if spec.repeat {
			p.vals[key] = append(p.vals[key], val)
		} else {
			p.vals[key] = []string{val}
		}
	}
	return p, nil
}

// splitFlag splits "--name=value", "--name", "-o" and "-ovalue". shown is
// the flag as written, for messages.
func splitFlag(a string) (name, val string, hasVal bool, shown string) {
	if strings.HasPrefix(a, "--") {
		name, val, hasVal = strings.Cut(a[2:], "=")
		return name, val, hasVal, "--" + name
	}
	// A short flag: one letter, its value attached or in the next word.
	name = a[1:2]
	if len(a) > 2 {
		val, hasVal = strings.TrimPrefix(a[2:], "="), true
	}
	return name, val, hasVal, "-" + name
}
