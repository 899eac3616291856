// Package jsonenc holds what maclan's hand-written JSON encoders share: the
// encoding of a string exactly as encoding/json writes it. The encoders
// are by hand where encoding/json's first use in a process, which builds
// its encoders by reflection, costs more than the rest of the work (every
// CNI call is a new process).
package jsonenc

import "unicode/utf8"

// AppendString appends s as a JSON string (RFC 8259, section 7), with
// the escapes json.Marshal chooses: the short forms of \b \f \n \r \t,
// \u00XX for the other control characters and for < > & (its HTML-safe
// default), and \u2028 and \u2029. It reports false if s is not valid
// UTF-8, which json.Marshal would alter.
func AppendString(b []byte, s string) ([]byte, bool) {
	const hex = "0123456789abcdef"
	if !utf8.ValidString(s) {
		return b, false
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == '\u2028' || r == '\u2029' {
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
				start = i + size
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	return append(append(b, s[start:]...), '"'), true
}

// AppendStrings appends vs as a JSON array of strings, each as
// AppendString writes it. It reports false if any is not valid UTF-8.
func AppendStrings(b []byte, vs []string) ([]byte, bool) {
	b = append(b, '[')
	all := true
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		b, ok = AppendString(b, v)
		all = all && ok
	}
	return append(b, ']'), all
}
