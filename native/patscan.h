/*
 * patscan: the fast path of regexp:/pcre: table parsing (see patscan.c).
 */
#ifndef PROXYMAPD_PATSCAN_H
#define PROXYMAPD_PATSCAN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Record types; each record is PATSCAN_FIELDS int32 values: [type, lineNo,
 * a, b, c, d, e, f, g, h, i]. Offsets are byte offsets into the text.
 */
enum {
  PATSCAN_MATCH = 1,  /* a pattern index, b match (0/1), c value start, d value end, e value has '$', f largest $n,
                         g pattern start, h pattern end, i compile options */
  PATSCAN_IF = 2,     /* a pattern index, b match (0/1), g pattern start, h pattern end, i compile options */
  PATSCAN_ENDIF = 3,  /* an ENDIF with nothing after it */
  PATSCAN_LINE = 4,   /* a logical line of one physical line, left to the full parser: a start, b end */
  PATSCAN_JOINED = 5, /* a logical line of several physical lines (or starting with whitespace): a start, b end of their span */
};
#define PATSCAN_FIELDS 11

enum { PATSCAN_REGEXP = 1, PATSCAN_PCRE = 2 };

/* Called for each pattern the scanner takes: a NUL-terminated pattern and its compile options; returns its index (< 0: stop). */
typedef int32_t (*patscan_add_fn)(void *ctx, const char *pattern, uint32_t options);

/* Upper bound on the number of records for a text of len bytes (one per physical line). */
size_t patscan_max_records(const char *text, size_t len);

/*
 * Split text (len bytes; text[len] must be writable) into logical lines and
 * take the rules that parse without any warning; everything else becomes a
 * LINE or JOINED record for the full parser. Closing delimiters of taken
 * patterns are overwritten with NUL in text (the patterns stay in place).
 * With fast = 0 every logical line becomes a LINE/JOINED record.
 * Returns the number of records written, or -1 when add() failed.
 */
long patscan(int dialect, char *text, size_t len, int fast, int no_regsub, int32_t *records, patscan_add_fn add, void *ctx);

#endif
