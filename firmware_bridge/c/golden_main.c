/* Prints the golden vectors of ../PROTOCOL.md as "name hex" lines, using only ecgret_frame.c.
 * Build: gcc -std=c99 -Wall -Wextra -O2 golden_main.c ecgret_frame.c -o golden */
#include <stdio.h>

#include "ecgret_frame.h"

static void show(const char *name, const uint8_t *b, size_t n)
{
    size_t i;
    printf("%s ", name);
    for (i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(void)
{
    uint8_t out[256];
    size_t n;
    const uint8_t check[] = "123456789";
    const uint8_t ping[] = {'e', 'c', 'g'};
    const int32_t d24[] = {1, -1, 8388607, -8388608, 256, -256};
    const int32_t d16[] = {32767, -32768};
    uint8_t back_type = 0;
    uint16_t back_seq = 0, back_len = 0;
    const uint8_t *back_payload = 0;

    printf("crc_check %04x\n", ecgret_crc16(0xFFFFu, check, 9));
    printf("crc_init %04x\n", ecgret_crc_init());
    n = ecgret_encode_frame(out, sizeof out, ECGRET_T_HELLO, 0, 0, 0);
    show("hello", out, n);
    n = ecgret_encode_frame(out, sizeof out, ECGRET_T_START, 1, 0, 0);
    show("start", out, n);
    n = ecgret_encode_frame(out, sizeof out, ECGRET_T_STOP, 2, 0, 0);
    show("stop", out, n);
    n = ecgret_encode_frame(out, sizeof out, ECGRET_T_PING, 3, ping, 3);
    show("ping", out, n);
    n = ecgret_encode_frame(out, sizeof out, ECGRET_T_PONG, 4, ping, 3);
    show("pong", out, n);
    n = ecgret_encode_info(out, sizeof out, 0, 3, 24, 24, 500.0f, 0.5f, 2, "I,II,V1", "demo");
    show("info", out, n);
    n = ecgret_encode_data(out, sizeof out, 7, 1000, d24, 2, 3, 24, 0x4u);
    show("data24", out, n);
    if (ecgret_check_frame(out, n, &back_type, &back_seq, &back_payload, &back_len) != (int)n
        || back_type != ECGRET_T_DATA || back_seq != 7) {
        printf("check_frame FAILED\n");
        return 1;
    }
    n = ecgret_encode_data(out, sizeof out, 0xFFFFu, 0, d16, 1, 2, 16, 0);
    show("data16", out, n);
    n = ecgret_encode_status(out, sizeof out, 8, ECGRET_ST_STARTED, 0, 0);
    show("status_started", out, n);
    n = ecgret_encode_error(out, sizeof out, 9, ECGRET_ERR_BAD_COMMAND, "bad cmd");
    show("error_bad_command", out, n);
    return 0;
}
