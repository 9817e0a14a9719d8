"""The parser check itself: it must reject what the real Azure CLI rejects, or the deploy tests prove
nothing."""

import subprocess

import pytest
from deploy_harness import ask_parser


@pytest.mark.parametrize("argv, message", [
    (["functionapp", "create", "-g", "rg", "-n", "app", "--storage-account", "st", "--flex-location", "westeurope"],
     "unrecognized arguments"),
    (["functionapp", "create", "-n", "app", "--storage-account", "st"], "the following arguments are required"),
    (["storage", "account", "create", "-n", "st", "-g", "rg", "--sku", "Cheap_LRS"], "is not a valid value for '--sku'"),
    (["storage", "queue-rm", "create", "-n", "q"], "misspelled or not recognized"),
    (["eventgrid", "system-topic", "event-subscription", "create", "-n", "s", "-g", "rg",
      "--system-topic-name", "t", "--endpoint-type", "azurefunctions", "--endpoint", "x"], "is not a valid value for '--endpoint-type'"),
])
def test_rejects_what_the_cli_rejects(parse_server, argv, message):
    reply = ask_parser(parse_server, argv)
    assert reply["status"] == "error"
    assert message in reply["stderr"]


def test_accepts_valid_commands_and_returns_parsed_arguments(parse_server):
    reply = ask_parser(parse_server, ["functionapp", "create", "-g", "rg", "-n", "app", "--storage-account", "st",
                                      "--flexconsumption-location", "westeurope", "--runtime", "python",
                                      "--runtime-version", "3.11"])
    assert reply["status"] == "ok", reply["stderr"]
    assert reply["command"] == "functionapp create"
    assert reply["params"]["flexconsumption_location"] == "westeurope"
    assert reply["network_attempted"] is False


def test_fake_az_fails_on_a_rejected_command_and_logs_it(make_fake_az):
    fake = make_fake_az()
    result = subprocess.run(["az", "group", "create", "--name", "rg", "--location", "westeurope", "--colour", "blue"],
                            capture_output=True, text=True, env=fake.env())
    assert result.returncode == 2
    assert "unrecognized arguments: --colour" in result.stderr
    (call,) = fake.calls()
    assert call["parse"] == "error" and call["argv"][:2] == ["group", "create"]
