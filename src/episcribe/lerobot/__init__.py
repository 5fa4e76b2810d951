"""The LeRobot v3 format: reading, decoding, writing, the language vocabulary, LeRobot's
resolver rules, the Hub.
"""
