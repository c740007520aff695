"""Sends channel data before the channel is confirmed, which OpenSSH's
client never does, then checks the connection still works.

Usage: early_channel_data.py HOST PORT USER KEYFILE

Right after its CHANNEL_OPEN, the client sends CHANNEL_DATA and
CHANNEL_EOF to every channel number the server might be about to assign
(a client cannot know it before the confirmation). Then it runs a command
on that channel and on a second one. Prints one line per channel,
"<output> <exit status>"; exits non-zero if the channel was refused.
"""

import sys

import paramiko
from paramiko.common import cMSG_CHANNEL_DATA, cMSG_CHANNEL_EOF
from paramiko.message import Message

MSG_CHANNEL_OPEN = 90
GUESSES = range(8)


def early(number, kind):
    message = Message()
    message.add_byte(kind)
    message.add_int(number)
    if kind == cMSG_CHANNEL_DATA:
        message.add_string(b"sent before the channel was confirmed\n" * 100)
    return message


def run(channel, command):
    channel.exec_command(command)
    output = channel.makefile("rb").read().decode().strip()
    return f"{output} {channel.recv_exit_status()}"


def main():
    host, port, user, keyfile = sys.argv[1:5]
    transport = paramiko.Transport((host, int(port)))
    transport.connect(
        username=user, pkey=paramiko.Ed25519Key.from_private_key_file(keyfile)
    )
    send = transport._send_user_message

    def send_then_jump_the_gun(message):
        send(message)
        if message.asbytes()[0] == MSG_CHANNEL_OPEN:
            for number in GUESSES:
                send(early(number, cMSG_CHANNEL_DATA))
                send(early(number, cMSG_CHANNEL_EOF))
            if any(event.is_set() for event in transport.channel_events.values()):
                sys.exit("the confirmation came before the early data went out")

    transport._send_user_message = send_then_jump_the_gun
    first = transport.open_session(timeout=20)
    transport._send_user_message = send
    print(run(first, "echo first"), flush=True)
    print(run(transport.open_session(timeout=20), "echo second"), flush=True)
    transport.close()


if __name__ == "__main__":
    main()
